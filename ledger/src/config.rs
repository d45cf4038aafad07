//! The sidecar's TOML configuration. Secrets are never written in the file:
//! it names the environment variables that hold them.

use std::path::Path;

use serde::Deserialize;

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
    pub hold_expiry_policy: crate::holds::ExpiryPolicy,
    #[serde(default = "default_link_ttl")]
    pub topup_link_ttl_secs: u64,
    /// Enables the development payment processor on the top-up page.
    #[serde(default)]
    pub dev_payments: bool,
    /// Environment variable holding the admin API token; unset disables the admin API.
    #[serde(default = "default_admin_env")]
    pub admin_token_env: String,
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
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
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
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default = "default_auth_scheme")]
    pub auth_scheme: String,
    /// Environment variable holding the provider key (built-in provider).
    pub api_key_env: String,
}

fn default_auth_header() -> String {
    "authorization".into()
}
fn default_auth_scheme() -> String {
    "Bearer ".into()
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
        let cfg: Config = toml::from_str(text)?;
        for p in &cfg.paywalls {
            if p.mode != "isolated" && p.mode != "shared" {
                anyhow::bail!("paywall {}: mode must be \"isolated\" or \"shared\"", p.id);
            }
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
