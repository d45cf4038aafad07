//! Provider kinds: the OpenAI-compatible services Tollgate forwards to, and
//! what each needs from a request — the path under its base URL, the header
//! that carries the key, Azure's deployment path and `api-version`. An
//! operator names the kind and (where it has no public default) the base URL;
//! the rest follows, so adding a provider needs no code.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Openai,
    Azure,
    Openrouter,
    Groq,
    Together,
    Mistral,
    /// Anthropic's OpenAI-compatible endpoint.
    Anthropic,
    /// Self-hosted vLLM (`vllm serve`): OpenAI's API, optional key.
    Vllm,
    /// Self-hosted Ollama: OpenAI's API under `/v1`, no key by default.
    Ollama,
}

/// Azure OpenAI's GA data-plane version, used when none is configured.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

impl ProviderKind {
    pub const ALL: [ProviderKind; 9] = [
        ProviderKind::Openai,
        ProviderKind::Azure,
        ProviderKind::Openrouter,
        ProviderKind::Groq,
        ProviderKind::Together,
        ProviderKind::Mistral,
        ProviderKind::Anthropic,
        ProviderKind::Vllm,
        ProviderKind::Ollama,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Openrouter => "openrouter",
            ProviderKind::Groq => "groq",
            ProviderKind::Together => "together",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Vllm => "vllm",
            ProviderKind::Ollama => "ollama",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The public API's base URL; None where each operator has their own
    /// (an Azure resource, a self-hosted server).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Openrouter => Some("https://openrouter.ai/api/v1"),
            ProviderKind::Groq => Some("https://api.groq.com/openai/v1"),
            ProviderKind::Together => Some("https://api.together.xyz/v1"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Azure | ProviderKind::Vllm | ProviderKind::Ollama => None,
        }
    }

    /// The header carrying the key and the text before the key in it.
    pub fn default_auth(self) -> (&'static str, &'static str) {
        match self {
            ProviderKind::Azure => ("api-key", ""),
            _ => ("authorization", "Bearer "),
        }
    }

    /// Whether requests need a key at all (self-hosted servers often run without).
    pub fn requires_key(self) -> bool {
        !matches!(self, ProviderKind::Vllm | ProviderKind::Ollama)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose key a request goes out with; decides the accounting (see README,
/// "Whose key pays"): under `Byok` the provider bills the paywall's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The paywall's own key (bring your own key).
    Byok,
    /// The operator's key, or none for a self-hosted provider without auth.
    BuiltIn,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Byok => "byok",
            KeySource::BuiltIn => "built_in",
        }
    }
}

/// Where the operator keeps a provider's key: an environment variable or a
/// file (a mounted secret), read when used and never stored. Both empty: the
/// operator has no key for it.
#[derive(Debug, Clone, Copy)]
pub struct BuiltInKeyRef<'a> {
    pub env: &'a str,
    pub file: &'a str,
}

/// The operator's key for a provider. `Ok(None)`: none is configured;
/// `Err`: one is configured but cannot be read now.
pub fn built_in_key(at: BuiltInKeyRef<'_>) -> Result<Option<String>, String> {
    if !at.env.is_empty() {
        return match std::env::var(at.env) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(format!("environment variable {} is not set", at.env)),
        };
    }
    if !at.file.is_empty() {
        return match std::fs::read_to_string(at.file) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            Ok(_) => Err(format!("key file {} is empty", at.file)),
            Err(e) => Err(format!("key file {} cannot be read: {}", at.file, e.kind())),
        };
    }
    Ok(None)
}

/// The key a request of a paywall uses: the paywall's own (`byok`, already
/// opened) before the operator's. `Ok(None)`: neither has one (normal for a
/// provider only paywalls' own keys serve). `Err`: a key is configured but
/// cannot be used — an operator problem; a stored paywall key that cannot be
/// opened is never a reason to bill the operator's key instead.
pub fn choose_key(
    kind: ProviderKind,
    byok: Option<Result<String, String>>,
    built_in: BuiltInKeyRef<'_>,
) -> Result<Option<(Option<String>, KeySource)>, String> {
    match byok {
        Some(Ok(key)) => Ok(Some((Some(key), KeySource::Byok))),
        Some(Err(e)) => Err(format!("the paywall's key cannot be used: {e}")),
        None => match built_in_key(built_in)? {
            Some(key) => Ok(Some((Some(key), KeySource::BuiltIn))),
            None if kind.requires_key() => Ok(None),
            None => Ok(Some((None, KeySource::BuiltIn))),
        },
    }
}

/// Whether a paywall's requests can be sent to a provider now.
pub fn key_available(
    kind: ProviderKind,
    paywall_has_key: bool,
    built_in: BuiltInKeyRef<'_>,
) -> bool {
    paywall_has_key
        || match built_in_key(built_in) {
            Ok(Some(_)) => true,
            Ok(None) => !kind.requires_key(),
            Err(_) => false,
        }
}

/// A base URL taken apart: what an Envoy cluster needs (host, port, TLS) and
/// the path prefix requests go under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Without a trailing slash; empty for the root.
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?}: the base URL must start with https:// or http://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(format!("{url:?}: the base URL takes no query or fragment"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{url:?}: invalid port {p:?}"))?,
            ),
            None => (authority, if tls { 443 } else { 80 }),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid_host {
            return Err(format!("{url:?}: invalid host {host:?}"));
        }
        Ok(BaseUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The value for `:authority` (the port only when it is not the default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The path (with query) of a chat completion at this provider. Azure names
/// the model by its deployment in the path; the others take it in the body.
pub fn chat_path(
    kind: ProviderKind,
    base: &BaseUrl,
    api_version: Option<&str>,
    upstream_model: &str,
) -> String {
    match kind {
        ProviderKind::Azure => format!(
            "{}/openai/deployments/{}/chat/completions?api-version={}",
            base.prefix,
            percent_encode_segment(upstream_model),
            api_version.unwrap_or(AZURE_DEFAULT_API_VERSION)
        ),
        _ => format!("{}/chat/completions", base.prefix),
    }
}

/// Escapes what may not appear raw in a path segment.
fn percent_encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("bedrock"), None);
    }

    #[test]
    fn every_public_kind_has_a_base_url_and_a_chat_path() {
        let expected = [
            (
                ProviderKind::Openai,
                "api.openai.com",
                "/v1/chat/completions",
            ),
            (
                ProviderKind::Openrouter,
                "openrouter.ai",
                "/api/v1/chat/completions",
            ),
            (
                ProviderKind::Groq,
                "api.groq.com",
                "/openai/v1/chat/completions",
            ),
            (
                ProviderKind::Together,
                "api.together.xyz",
                "/v1/chat/completions",
            ),
            (
                ProviderKind::Mistral,
                "api.mistral.ai",
                "/v1/chat/completions",
            ),
            (
                ProviderKind::Anthropic,
                "api.anthropic.com",
                "/v1/chat/completions",
            ),
        ];
        for (kind, host, path) in expected {
            let base = BaseUrl::parse(kind.default_base_url().unwrap()).unwrap();
            assert_eq!((base.host.as_str(), base.port, base.tls), (host, 443, true));
            assert_eq!(chat_path(kind, &base, None, "m"), path);
            assert_eq!(kind.default_auth(), ("authorization", "Bearer "));
        }
    }

    #[test]
    fn azure_puts_the_deployment_and_version_in_the_url() {
        let base = BaseUrl::parse("https://contoso.openai.azure.com/").unwrap();
        assert_eq!(
            chat_path(
                ProviderKind::Azure,
                &base,
                Some("2025-04-01-preview"),
                "gpt-4o prod"
            ),
            "/openai/deployments/gpt-4o%20prod/chat/completions?api-version=2025-04-01-preview"
        );
        assert_eq!(
            chat_path(ProviderKind::Azure, &base, None, "d"),
            "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(ProviderKind::Azure.default_auth(), ("api-key", ""));
    }

    #[test]
    fn base_urls_parse_into_what_envoy_needs() {
        let local = BaseUrl::parse("http://127.0.0.1:11434/v1").unwrap();
        assert_eq!(
            (local.tls, local.port, local.prefix.as_str()),
            (false, 11434, "/v1")
        );
        assert_eq!(local.authority(), "127.0.0.1:11434");
        assert_eq!(
            BaseUrl::parse("https://api.openai.com/v1")
                .unwrap()
                .authority(),
            "api.openai.com"
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://h:99999",
            "https://h/v1?x=1",
            "https://a b",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
