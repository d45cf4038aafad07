//! The sidecar's TOML configuration. Secrets are never written in the file:
//! it names the environment variables that hold them.

use std::path::Path;

use serde::Deserialize;

use crate::catalog::provider_kinds::{BaseUrl, ProviderKind};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub paywalls: Vec<PaywallSeed>,
    #[serde(default)]
    pub providers: Vec<ProviderSeed>,
    #[serde(default)]
    pub models: Vec<ModelSeed>,
    #[serde(default)]
    pub webhooks: Vec<WebhookSeed>,
    /// The processor behind the top-up page; none: the page cannot take payments.
    #[serde(default)]
    pub payments: Option<crate::payments::config::PaymentsConfig>,
}

/// An endpoint that receives the outbox's events, signed with a secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSeed {
    pub id: String,
    /// `https://…` (or `http://` for a receiver on a private network).
    pub url: String,
    /// Environment variable holding the signing secret.
    pub secret_env: String,
    /// Only this paywall's events (default: all).
    #[serde(default)]
    pub paywall: Option<String>,
    /// Only these event names (default: all).
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl WebhookSeed {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.url.starts_with("https://") || self.url.starts_with("http://"),
            "webhook {}: url must be https:// or http://",
            self.id
        );
        anyhow::ensure!(
            !self.secret_env.is_empty(),
            "webhook {}: secret_env is required",
            self.id
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Base URL end users open links under (the public Envoy listener).
    #[serde(default = "default_public_url")]
    pub public_url: String,
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Environment variable holding the secret the filter sends on internal calls.
    #[serde(default = "default_secret_env")]
    pub internal_secret_env: String,
    /// How long a hold stays open before the sweeper resolves it.
    #[serde(default = "default_hold_ttl")]
    pub hold_ttl_secs: u64,
    /// A balance that cannot cover the requested output still gets a reply with
    /// the output it can pay for, if that is at least this many tokens.
    #[serde(default = "default_output_floor")]
    pub affordable_output_floor: u32,
    /// What an expired hold becomes: `void` (default), `charge_prompt` or `charge_held`.
    #[serde(default)]
    pub hold_expiry_policy: crate::money::holds::ExpiryPolicy,
    #[serde(default = "default_link_ttl")]
    pub topup_link_ttl_secs: u64,
    /// Replaced by `[payments] processor = "dev"`; kept only to say so.
    #[serde(default)]
    pub dev_payments: Option<bool>,
    /// Environment variable holding the admin API token; unset disables the admin API.
    #[serde(default = "default_admin_env")]
    pub admin_token_env: String,
    /// How often the webhook dispatcher looks for new events and due retries.
    #[serde(default = "default_webhook_poll_ms")]
    pub webhook_poll_ms: u64,
    /// Wait before the first retry of a failed delivery; it doubles each time (≤ 1 h).
    #[serde(default = "default_webhook_retry_base_ms")]
    pub webhook_retry_base_ms: u64,
    /// Threads running the sidecar's requests (SQLite's connections and the
    /// group committer have their own). One by default: a request's async
    /// work is short, and on a small machine shared with Envoy a second
    /// worker mostly adds wake-ups between threads (README, "Operating the
    /// ledger"). Raise it for a PostgreSQL sidecar with cores of its own.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: std::num::NonZeroUsize,
}

impl Config {
    /// The development processor credits whatever is chosen on the top-up
    /// page: refuse it unless its links point at this machine only (or the
    /// operator insists with `TOLLGATE_ALLOW_DEV_PAYMENTS=1`).
    pub fn check_dev_payments(&self, allowed_anyway: bool) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.server.dev_payments.is_none(),
            "`dev_payments` in [server] was replaced by a [payments] table: \
             `processor = \"dev\"` for the development processor, `processor = \"stripe\"` for real payments"
        );
        let dev = self
            .payments
            .as_ref()
            .is_some_and(|p| p.processor == crate::payments::config::ProcessorKind::Dev);
        if !dev || allowed_anyway || is_loopback_url(&self.server.public_url) {
            return Ok(());
        }
        anyhow::bail!(
            "refusing to start: [payments] processor = \"dev\" (the development payment processor, which \
             credits any amount chosen) with `public_url = {:?}`, which is not a loopback address. \
             Use processor = \"stripe\", or set TOLLGATE_ALLOW_DEV_PAYMENTS=1 if this is really a demo.",
            self.server.public_url
        )
    }
}

/// Whether `url` names this machine only (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn default_webhook_poll_ms() -> u64 {
    1000
}
fn default_webhook_retry_base_ms() -> u64 {
    5000
}
fn default_worker_threads() -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::MIN
}

fn default_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_database_url() -> String {
    "sqlite://.tollgate/ledger.db".into()
}
fn default_secret_env() -> String {
    "TOLLGATE_INTERNAL_SECRET".into()
}
fn default_admin_env() -> String {
    "TOLLGATE_ADMIN_TOKEN".into()
}
fn default_output_floor() -> u32 {
    16
}
fn default_hold_ttl() -> u64 {
    600
}
fn default_link_ttl() -> u64 {
    3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaywallSeed {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Environment variable holding the paywall key (stored only as a hash).
    pub key_env: String,
    /// Per-user limits of this paywall; absent means none.
    #[serde(default)]
    pub limits: Option<LimitsSeed>,
}

/// Limits per end user of one paywall. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSeed {
    /// Prompt estimate plus maximum output of one request.
    pub max_tokens_per_request: Option<u32>,
    pub requests_per_minute: Option<u32>,
    /// Counts the reserved maximum; settle gives back the unused part.
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once.
    pub max_open_holds: Option<u32>,
    /// Decimal strings, like prices ("5.00"); UTC day and month.
    pub daily_spend_cap: Option<String>,
    pub monthly_spend_cap: Option<String>,
}

fn default_mode() -> String {
    "isolated".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSeed {
    pub id: String,
    /// Value of the filter's route header; Envoy maps it to the provider's cluster.
    pub cluster: String,
    /// openai, azure, openrouter, groq, together, mistral, anthropic, vllm or ollama.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The provider's OpenAI-compatible API root (`https://api.openai.com/v1`);
    /// public kinds have a default, Azure and self-hosted ones need it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Azure's `api-version` (default: the GA version in `providers`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Overrides the kind's key header (`authorization`, Azure's `api-key`).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Overrides the text before the key (`Bearer `; empty for Azure).
    #[serde(default)]
    pub auth_scheme: Option<String>,
    /// Environment variable holding the operator's key (a built-in provider).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Or a file holding it (a mounted secret), read when used.
    /// Neither: only paywalls that bring their own key can use the provider
    /// (or, for vLLM and Ollama, it needs no key).
    #[serde(default)]
    pub api_key_file: Option<String>,
}

fn default_kind() -> String {
    "openai".into()
}

impl ProviderSeed {
    /// An entry from the admin API or CLI: the fields of a `[[providers]]`
    /// entry as JSON, the id given apart (the path, the argument).
    pub fn from_json_fields(id: &str, mut fields: serde_json::Value) -> serde_json::Result<Self> {
        if let Some(obj) = fields.as_object_mut() {
            obj.insert("id".into(), serde_json::Value::String(id.into()));
        }
        serde_json::from_value(fields)
    }

    /// Checks the entry and fills in what its kind implies.
    pub fn resolve(&self) -> anyhow::Result<ResolvedProvider> {
        let kind = ProviderKind::parse(&self.kind).ok_or_else(|| {
            let kinds: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
            anyhow::anyhow!(
                "provider {}: unknown kind {:?} (one of {})",
                self.id,
                self.kind,
                kinds.join(", ")
            )
        })?;
        let base_url = match (&self.base_url, kind.default_base_url()) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url.to_string(),
            (None, None) => anyhow::bail!("provider {}: kind {kind} needs a base_url", self.id),
        };
        BaseUrl::parse(&base_url).map_err(|e| anyhow::anyhow!("provider {}: {e}", self.id))?;
        if self.api_version.is_some() && kind != ProviderKind::Azure {
            anyhow::bail!(
                "provider {}: api_version applies to kind azure only",
                self.id
            );
        }
        let api_key_env = self.api_key_env.clone().unwrap_or_default();
        let api_key_file = self.api_key_file.clone().unwrap_or_default();
        if !api_key_env.is_empty() && !api_key_file.is_empty() {
            anyhow::bail!(
                "provider {}: set api_key_env or api_key_file, not both",
                self.id
            );
        }
        let (header, scheme) = kind.default_auth();
        let auth_header = self.auth_header.clone().unwrap_or_else(|| header.into());
        if auth_header.is_empty()
            || !auth_header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            anyhow::bail!(
                "provider {}: auth_header must be a lowercase header name",
                self.id
            );
        }
        Ok(ResolvedProvider {
            kind,
            base_url,
            api_version: self.api_version.clone(),
            auth_header,
            auth_scheme: self.auth_scheme.clone().unwrap_or_else(|| scheme.into()),
            api_key_env,
            api_key_file,
        })
    }
}

/// A provider entry with its kind's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProvider {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_version: Option<String>,
    pub auth_header: String,
    pub auth_scheme: String,
    /// Both empty: no built-in key.
    pub api_key_env: String,
    pub api_key_file: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSeed {
    /// Required in the TOML; taken from the path in the admin API.
    #[serde(default)]
    pub name: String,
    pub provider: String,
    #[serde(default)]
    pub upstream_model: Option<String>,
    #[serde(default = "default_max_output")]
    pub default_max_output_tokens: u32,
    /// Prices per million tokens as decimal strings ("2.50").
    pub input_per_m: String,
    #[serde(default)]
    pub cached_input_per_m: Option<String>,
    pub output_per_m: String,
    #[serde(default)]
    pub markup_bps: u32,
    #[serde(default)]
    pub min_charge: Option<String>,
    /// Providers to try, in order, when the model's own answers 429 or 5xx or
    /// cannot be reached (before any byte reaches the client).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackSeed>,
}

/// A fallback provider of a model, and the name it knows the model by.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackSeed {
    pub provider: String,
    #[serde(default)]
    pub upstream_model: Option<String>,
}

fn default_max_output() -> u32 {
    4096
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(&expand_env(text)?)?;
        for p in &cfg.paywalls {
            if tollgate_protocol::PaywallMode::parse(&p.mode).is_none() {
                anyhow::bail!("paywall {}: mode must be \"isolated\" or \"shared\"", p.id);
            }
        }
        for p in &cfg.providers {
            p.resolve()?;
        }
        for h in &cfg.webhooks {
            h.check()?;
        }
        for m in &cfg.models {
            if m.name.is_empty() {
                anyhow::bail!("every [[models]] entry needs a name");
            }
            if !cfg.providers.iter().any(|p| p.id == m.provider) {
                anyhow::bail!("model {}: unknown provider {:?}", m.name, m.provider);
            }
        }
        Ok(cfg)
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with the environment's values, so
/// one file serves several deployments (`base_url = "http://127.0.0.1:${MOCK_PROVIDER_PORT:-8082}/v1"`).
/// Comment lines are left alone. Secrets belong in the `*_env` settings, which
/// are read when used and never copied into the configuration.
pub fn expand_env(text: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow::anyhow!("unclosed ${{ in {:?}", line.trim()))?;
            let (name, default) = match after[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&after[..end], None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => {
                    anyhow::bail!("environment variable {name} is not set (used as ${{{name}}})")
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod env_tests {
    use super::expand_env;

    #[test]
    fn expands_variables_with_defaults_and_names_missing_ones() {
        std::env::set_var("CONFIG_TEST_PORT", "9999");
        let text = "a = \"${CONFIG_TEST_PORT}\"\nb = \"${CONFIG_TEST_UNSET:-8082}\"\n# ${CONFIG_TEST_UNSET}\n";
        assert_eq!(
            expand_env(text).unwrap(),
            "a = \"9999\"\nb = \"8082\"\n# ${CONFIG_TEST_UNSET}\n"
        );
        let err = expand_env("x = \"${CONFIG_TEST_UNSET}\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_TEST_UNSET"), "{err}");
        assert!(expand_env("x = \"${OPEN").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn only_this_machine_counts_as_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://127.9.9.9",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://pay.example.com",
            "http://0.0.0.0:8080",
            "http://10.0.0.1",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "not a url",
            "",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn the_sidecar_runs_on_one_worker_thread_unless_told_otherwise() {
        let threads = |server: &str| {
            super::Config::parse(&format!("[server]\n{server}\n"))
                .map(|c| c.server.worker_threads.get())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(threads(""), Ok(1));
        assert_eq!(threads("worker_threads = 4"), Ok(4));
        let zero = threads("worker_threads = 0").unwrap_err();
        assert!(zero.contains("worker_threads"), "{zero}");
    }
}
