//! The sidecar's Prometheus metrics, served as text at `GET /metrics` on its
//! own port (Envoy's public listener does not route it). Recorded through the
//! `metrics` facade and rendered by `metrics-exporter-prometheus`; every family
//! is declared in [`FAMILIES`] (help text, label names) and starts at zero for
//! its known label values, so `/metrics` lists it before its first event.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Label;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// A metric family: its name, kind, help, the label names its samples carry
/// (in this order) and the label values known in advance (shown at zero).
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
    known: &'static [&'static [&'static str]],
}

const FAMILIES: &[Family] = &[
    Family {
        name: AUTHORIZATIONS,
        kind: Kind::Counter,
        help: "Authorize calls by decision (allow, action, reject) and reason.",
        labels: &["decision", "reason"],
        known: &[&["allow", "allowed"]],
    },
    Family {
        name: AUTHORIZE_SECONDS,
        kind: Kind::Histogram,
        help: "Time to answer an authorize call.",
        labels: &[],
        known: &[],
    },
    Family {
        name: SETTLEMENTS,
        kind: Kind::Counter,
        help: "Settlements by outcome (posted, voided, replayed, refused).",
        labels: &["outcome"],
        known: &[&["posted"], &["voided"], &["replayed"], &["refused"]],
    },
    Family {
        name: SETTLE_SECONDS,
        kind: Kind::Histogram,
        help: "Time to answer a settle call.",
        labels: &[],
        known: &[],
    },
    Family {
        name: BALANCES_DEPLETED,
        kind: Kind::Counter,
        help: "Charges after which the user's balance could not pay for another such request.",
        labels: &[],
        known: &[&[]],
    },
    Family {
        name: HOLD_EXPIRIES,
        kind: Kind::Counter,
        help: "Holds resolved by their expiry policy (no settlement before the TTL), by policy.",
        labels: &["policy"],
        known: &[&["void"], &["charge_prompt"], &["charge_held"]],
    },
    Family {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        help: "Requests the sidecar received, by the area of its path (internal, admin, public, pages, payments, meta, other).",
        labels: &["area"],
        known: &[&["internal"], &["admin"], &["public"], &["pages"], &["payments"], &["meta"], &["other"]],
    },
    Family {
        name: DATABASE_ERRORS,
        kind: Kind::Counter,
        help: "Operations that failed on a database error, by operation.",
        labels: &["operation"],
        known: &[&["api"], &["sweep"], &["webhooks"]],
    },
    Family {
        name: GROUP_COMMITS,
        kind: Kind::Counter,
        help: "Transactions the group committer committed or tried to (one per batch of authorizations and settlements).",
        labels: &[],
        known: &[&[]],
    },
    Family {
        name: GROUP_COMMIT_JOBS,
        kind: Kind::Counter,
        help: "Authorizations and settlements carried by group commits; divided by tollgate_ledger_group_commits_total, the mean batch size.",
        labels: &[],
        known: &[&[]],
    },
    Family {
        name: STRIPE_EVENTS,
        kind: Kind::Counter,
        help: "Stripe webhook events with a valid signature, by what they did (credited, pending, failed, refunded, already_applied, duplicate, ignored, error).",
        labels: &["outcome"],
        known: &[&["credited"], &["refunded"], &["duplicate"], &["ignored"], &["error"]],
    },
    Family {
        name: STRIPE_SIGNATURES_REFUSED,
        kind: Kind::Counter,
        help: "Requests to /webhooks/stripe refused for their signature (missing, malformed, wrong or stale).",
        labels: &[],
        known: &[&[]],
    },
];

pub const AUTHORIZATIONS: &str = "tollgate_ledger_authorizations_total";
pub const AUTHORIZE_SECONDS: &str = "tollgate_ledger_authorize_duration_seconds";
pub const SETTLEMENTS: &str = "tollgate_ledger_settlements_total";
pub const SETTLE_SECONDS: &str = "tollgate_ledger_settle_duration_seconds";
pub const BALANCES_DEPLETED: &str = "tollgate_ledger_balances_depleted_total";
pub const HOLD_EXPIRIES: &str = "tollgate_ledger_hold_expiries_total";
pub const DATABASE_ERRORS: &str = "tollgate_ledger_database_errors_total";
pub const HTTP_REQUESTS: &str = "tollgate_ledger_http_requests_total";
pub const GROUP_COMMITS: &str = "tollgate_ledger_group_commits_total";
pub const GROUP_COMMIT_JOBS: &str = "tollgate_ledger_group_commit_jobs_total";
pub const STRIPE_EVENTS: &str = "tollgate_ledger_stripe_events_total";
pub const STRIPE_SIGNATURES_REFUSED: &str = "tollgate_ledger_stripe_signatures_refused_total";

/// Upper bounds (seconds) of the latency buckets: 1 ms to 5 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide recorder, installed on first use (the server's start
/// calls [`init`] before anything is counted).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new();
    for f in FAMILIES.iter().filter(|f| f.kind == Kind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(f.name.to_string()), BUCKETS)
            .unwrap_or_else(|_| unreachable!("the bucket list is not empty"));
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Another global recorder (none in this binary) would keep ours from
    // receiving samples; /metrics then shows only the declarations.
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder was already installed");
    }
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => {
                metrics::describe_counter!(f.name, f.help);
                for values in f.known {
                    metrics::counter!(f.name, labels(f.labels, values)).absolute(0);
                }
            }
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
    handle
}

/// Installs the recorder and declares every family.
pub fn init() {
    handle();
}

/// How often histogram samples are folded into their buckets.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets. The exporter keeps
/// samples until then, so without it (and without scrapes) they would grow
/// without bound; the server runs it every [`UPKEEP_EVERY`].
pub fn upkeep() {
    handle().run_upkeep();
}

fn labels(names: &[&'static str], values: &[&str]) -> Vec<Label> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| Label::new(*n, v.to_string()))
        .collect()
}

fn label_names(name: &str) -> &'static [&'static str] {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .map_or(&[], |f| f.labels)
}

/// Adds one to a counter; `labels` are the values of the family's label names.
pub fn count(name: &'static str, values: &[&str]) {
    count_by(name, values, 1);
}

pub fn count_by(name: &'static str, values: &[&str], n: u64) {
    init();
    metrics::counter!(name, labels(label_names(name), values)).increment(n);
}

/// One group commit of `jobs` authorizations and settlements.
pub fn commit_batch(jobs: usize) {
    count(GROUP_COMMITS, &[]);
    count_by(
        GROUP_COMMIT_JOBS,
        &[],
        u64::try_from(jobs).unwrap_or(u64::MAX),
    );
}

/// Records one observation of a latency histogram.
pub fn observe(name: &'static str, elapsed: Duration) {
    init();
    metrics::histogram!(name).record(elapsed.as_secs_f64());
}

/// The Prometheus text exposition (format 0.0.4) of every family.
pub fn render() -> String {
    handle().render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        count(AUTHORIZATIONS, &["reject", "model_not_found"]);
        count(AUTHORIZATIONS, &["reject", "model_not_found"]);
        count(HOLD_EXPIRIES, &["void\"x"]);
        observe(AUTHORIZE_SECONDS, Duration::from_millis(3));
        observe(AUTHORIZE_SECONDS, Duration::from_secs(9));
        let text = render();
        assert!(text.contains(
            "tollgate_ledger_authorizations_total{decision=\"reject\",reason=\"model_not_found\"} 2"
        ));
        assert!(text.contains("# TYPE tollgate_ledger_authorize_duration_seconds histogram"));
        assert!(text.contains("tollgate_ledger_authorize_duration_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("tollgate_ledger_authorize_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("tollgate_ledger_authorize_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("tollgate_ledger_authorize_duration_seconds_count 2"));
        // Label values are escaped.
        assert!(text.contains("tollgate_ledger_hold_expiries_total{policy=\"void\\\"x\"} 1"));
        // Families without events are declared, with their known labels at zero.
        assert!(text.contains("tollgate_ledger_balances_depleted_total 0"));
        assert!(text.contains("# HELP tollgate_ledger_hold_expiries_total"));
        assert!(text.contains("tollgate_ledger_database_errors_total{operation=\"sweep\"} 0"));
    }
}
