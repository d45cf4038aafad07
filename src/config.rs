//! Plugin configuration: a serde DTO as Envoy hands it to `on_configure`,
//! compiled with `TryFrom` into the validated [`FilterConfig`].

use std::time::Duration;

use serde::Deserialize;

use crate::tokens::{EncodingName, ModelEncodings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfigDto {
    /// Envoy cluster of the ledger sidecar.
    pub sidecar_cluster: String,
    /// `:authority` sent on sidecar callouts.
    #[serde(default = "default_authority")]
    pub sidecar_authority: String,
    /// Shared secret proving to the sidecar that a call comes from this filter.
    pub internal_secret: String,
    #[serde(default = "default_callout_timeout_ms")]
    pub callout_timeout_ms: u64,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Request header the filter sets to select the provider's Envoy route.
    #[serde(default = "default_route_header")]
    pub route_header: String,
    #[serde(default = "default_settle_retry_initial_ms")]
    pub settle_retry_initial_ms: u64,
    #[serde(default = "default_settle_retry_max_ms")]
    pub settle_retry_max_ms: u64,
    #[serde(default = "default_settle_backlog_max")]
    pub settle_backlog_max: usize,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Hold back the last bytes of a response until the sidecar has
    /// acknowledged its charge (read-your-writes for apps; a crash of Envoy
    /// cannot lose the charge of a response the client received in full).
    #[serde(default = "default_settle_before_release")]
    pub settle_before_release: bool,
    /// How long the last bytes wait for that acknowledgement; after it they
    /// go and the settlement is queued as usual.
    #[serde(default = "default_settle_ack_timeout_ms")]
    pub settle_ack_timeout_ms: u64,
    /// Encoding used when no prefix in `model_encodings` matches.
    #[serde(default = "default_encoding")]
    pub default_encoding: String,
    /// Model-name prefix → encoding; longest prefix wins. Empty means the built-in table.
    #[serde(default)]
    pub model_encodings: Vec<ModelEncodingDto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEncodingDto {
    pub prefix: String,
    pub encoding: String,
}

fn default_authority() -> String {
    "tollgate-ledger".into()
}
fn default_callout_timeout_ms() -> u64 {
    2_000
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_route_header() -> String {
    "x-tollgate-route".into()
}
/// Settlement retries start here and double up to the maximum.
pub const DEFAULT_SETTLE_RETRY_INITIAL_MS: u64 = 200;
pub const DEFAULT_SETTLE_RETRY_MAX_MS: u64 = 30_000;
/// Settlements kept for delivery at most; past it, holds expire by policy.
pub const DEFAULT_SETTLE_BACKLOG_MAX: usize = 10_000;

pub const DEFAULT_SETTLE_ACK_TIMEOUT_MS: u64 = 1_000;

fn default_settle_before_release() -> bool {
    true
}
fn default_settle_ack_timeout_ms() -> u64 {
    DEFAULT_SETTLE_ACK_TIMEOUT_MS
}
fn default_settle_retry_initial_ms() -> u64 {
    DEFAULT_SETTLE_RETRY_INITIAL_MS
}
fn default_settle_retry_max_ms() -> u64 {
    DEFAULT_SETTLE_RETRY_MAX_MS
}
fn default_settle_backlog_max() -> usize {
    DEFAULT_SETTLE_BACKLOG_MAX
}
fn default_tick_ms() -> u64 {
    100
}
fn default_encoding() -> String {
    "o200k_base".into()
}

/// Validated configuration the filter runs with.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub sidecar_cluster: String,
    pub sidecar_authority: String,
    pub internal_secret: String,
    pub callout_timeout: Duration,
    pub max_body_bytes: usize,
    pub route_header: String,
    pub settle_retry_initial: Duration,
    pub settle_retry_max: Duration,
    pub settle_backlog_max: usize,
    pub tick: Duration,
    pub settle_before_release: bool,
    pub settle_ack_timeout: Duration,
    pub encodings: ModelEncodings,
}

impl TryFrom<FilterConfigDto> for FilterConfig {
    type Error = String;

    fn try_from(dto: FilterConfigDto) -> Result<Self, Self::Error> {
        if dto.sidecar_cluster.trim().is_empty() {
            return Err("sidecar_cluster must name an Envoy cluster".into());
        }
        if dto.internal_secret.len() < 16 {
            return Err("internal_secret must be at least 16 characters".into());
        }
        if !(1..=60_000).contains(&dto.callout_timeout_ms) {
            return Err("callout_timeout_ms must be between 1 and 60000".into());
        }
        if !(1..=64 * 1024 * 1024).contains(&dto.max_body_bytes) {
            return Err("max_body_bytes must be between 1 and 67108864".into());
        }
        if !valid_header_name(&dto.route_header) {
            return Err("route_header must be a lowercase HTTP header name".into());
        }
        if dto.settle_retry_initial_ms == 0 || dto.settle_retry_max_ms < dto.settle_retry_initial_ms
        {
            return Err("settle_retry_initial_ms must be > 0 and <= settle_retry_max_ms".into());
        }
        if dto.settle_backlog_max == 0 {
            return Err("settle_backlog_max must be > 0".into());
        }
        if !(1..=60_000).contains(&dto.settle_ack_timeout_ms) {
            return Err("settle_ack_timeout_ms must be between 1 and 60000".into());
        }
        if !(10..=10_000).contains(&dto.tick_ms) {
            return Err("tick_ms must be between 10 and 10000".into());
        }
        let default = EncodingName::parse(&dto.default_encoding)
            .ok_or_else(|| format!("unknown default_encoding {:?}", dto.default_encoding))?;
        let encodings = if dto.model_encodings.is_empty() {
            ModelEncodings::builtin(default)
        } else {
            let mut table = Vec::with_capacity(dto.model_encodings.len());
            for m in dto.model_encodings {
                let enc = EncodingName::parse(&m.encoding).ok_or_else(|| {
                    format!(
                        "unknown encoding {:?} for prefix {:?}",
                        m.encoding, m.prefix
                    )
                })?;
                table.push((m.prefix, enc));
            }
            ModelEncodings::new(table, default)
        };
        Ok(FilterConfig {
            sidecar_cluster: dto.sidecar_cluster,
            sidecar_authority: dto.sidecar_authority,
            internal_secret: dto.internal_secret,
            callout_timeout: Duration::from_millis(dto.callout_timeout_ms),
            max_body_bytes: dto.max_body_bytes,
            route_header: dto.route_header,
            settle_retry_initial: Duration::from_millis(dto.settle_retry_initial_ms),
            settle_retry_max: Duration::from_millis(dto.settle_retry_max_ms),
            settle_backlog_max: dto.settle_backlog_max,
            tick: Duration::from_millis(dto.tick_ms),
            settle_before_release: dto.settle_before_release,
            settle_ack_timeout: Duration::from_millis(dto.settle_ack_timeout_ms),
            encodings,
        })
    }
}

impl FilterConfig {
    /// Parses and validates the raw plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        // The error names the field at fault (`callout_timeout_ms: invalid value…`).
        let mut json = serde_json::Deserializer::from_slice(bytes);
        let dto: FilterConfigDto = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            format!("invalid plugin configuration: {at}{}", e.inner())
        })?;
        FilterConfig::try_from(dto)
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"sidecar_cluster":"ledger","internal_secret":"0123456789abcdef"}"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.callout_timeout, Duration::from_secs(2));
        assert_eq!(c.max_body_bytes, 1024 * 1024);
        assert_eq!(c.route_header, "x-tollgate-route");
    }

    #[test]
    fn each_invalid_field_is_rejected_with_its_name() {
        let cases = [
            (
                r#"{"sidecar_cluster":"","internal_secret":"0123456789abcdef"}"#,
                "sidecar_cluster",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"short"}"#,
                "internal_secret",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","callout_timeout_ms":0}"#,
                "callout_timeout_ms",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","max_body_bytes":0}"#,
                "max_body_bytes",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","route_header":"X Bad"}"#,
                "route_header",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","tick_ms":1}"#,
                "tick_ms",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","default_encoding":"nope"}"#,
                "default_encoding",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","model_encodings":[{"prefix":"x","encoding":"bad"}]}"#,
                "encoding",
            ),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","typo":1}"#,
                "typo",
            ),
            ("not json", "invalid plugin configuration"),
            (
                r#"{"sidecar_cluster":"l","internal_secret":"0123456789abcdef","callout_timeout_ms":-5}"#,
                "callout_timeout_ms: invalid value",
            ),
        ];
        for (json, needle) in cases {
            let err = FilterConfig::from_json(json.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
