//! Provider kinds: the OpenAI-compatible services Tollgate forwards to, and
//! what each needs from a request — the path under its base URL, the header
//! that carries the key, Azure's deployment path and `api-version`. An
//! operator names the kind and (where it has no public default) the base URL;
//! the rest follows, so adding a provider needs no code.

use std::fmt;

use super::master_key::KeyError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

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

pub use tollgate_protocol::KeySource;

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
pub fn built_in_key(at: BuiltInKeyRef<'_>) -> Result<Option<String>, KeyUnusable> {
    if !at.env.is_empty() {
        return match std::env::var(at.env) {
            Ok(key) if !key.is_empty() => Ok(Some(key)),
            _ => Err(KeyUnusable::EnvUnset(at.env.to_string())),
        };
    }
    if !at.file.is_empty() {
        return match std::fs::read_to_string(at.file) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            Ok(_) => Err(KeyUnusable::FileEmpty(at.file.to_string())),
            Err(e) => Err(KeyUnusable::FileUnreadable(at.file.to_string(), e.kind())),
        };
    }
    Ok(None)
}

/// Why a configured provider key cannot be used now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyUnusable {
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("key file {0} is empty")]
    FileEmpty(String),
    #[error("key file {0} cannot be read: {1}")]
    FileUnreadable(String, std::io::ErrorKind),
    #[error("the paywall's key cannot be used: {0}")]
    Byok(#[from] KeyError),
}

/// The key a request of a paywall uses: the paywall's own (`byok`, already
/// opened) before the operator's. `Ok(None)`: neither has one (normal for a
/// provider only paywalls' own keys serve). `Err`: a key is configured but
/// cannot be used — an operator problem; a stored paywall key that cannot be
/// opened is never a reason to bill the operator's key instead.
pub fn choose_key(
    kind: ProviderKind,
    byok: Option<Result<String, KeyError>>,
    built_in: BuiltInKeyRef<'_>,
) -> Result<Option<(Option<String>, KeySource)>, KeyUnusable> {
    match byok {
        Some(Ok(key)) => Ok(Some((Some(key), KeySource::Byok))),
        Some(Err(e)) => Err(e.into()),
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
    /// A lowercase DNS name or an IP address (IPv6 without brackets), as
    /// Envoy's socket address takes it.
    pub host: String,
    pub port: u16,
    /// Without a trailing slash; empty for the root.
    pub prefix: String,
}

/// Why a provider's base URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBaseUrl {
    #[error("{0:?}: {1}")]
    Unparsable(String, url::ParseError),
    #[error("{0:?}: the base URL must start with https:// or http://")]
    Scheme(String),
    #[error("{0:?}: the base URL takes no query or fragment")]
    QueryOrFragment(String),
    #[error("{0:?}: the base URL takes no credentials")]
    Credentials(String),
    #[error("{0:?}: the base URL has no host")]
    NoHost(String),
}

impl BaseUrl {
    pub fn parse(text: &str) -> Result<Self, InvalidBaseUrl> {
        let url =
            url::Url::parse(text).map_err(|e| InvalidBaseUrl::Unparsable(text.to_string(), e))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(InvalidBaseUrl::Scheme(text.to_string())),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(InvalidBaseUrl::QueryOrFragment(text.to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidBaseUrl::Credentials(text.to_string()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(InvalidBaseUrl::NoHost(text.to_string())),
        };
        Ok(BaseUrl {
            tls,
            host,
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
            prefix: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// The value for `:authority` (the port only when it is not the default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
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

/// What may not appear raw in a path segment: all but RFC 3986's unreserved.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode_segment(s: &str) -> String {
    utf8_percent_encode(s, PATH_SEGMENT).to_string()
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
        let v6 = BaseUrl::parse("http://[::1]:8000/v1/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8000));
        assert_eq!(v6.authority(), "[::1]:8000");
        assert_eq!(v6.prefix, "/v1");
        assert_eq!(
            BaseUrl::parse("HTTPS://API.Example.com").unwrap().host,
            "api.example.com"
        );
        assert_eq!(
            percent_encode_segment("my deploy/ü~x"),
            "my%20deploy%2F%C3%BC~x"
        );
        for bad in [
            "https://user:pw@h/v1",
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
