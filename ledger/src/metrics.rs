//! The sidecar's Prometheus metrics, served as text at `GET /metrics` on its
//! own port (Envoy's public listener does not route it). A small registry of
//! counters and histograms keyed by name and label values; every family is
//! declared in [`FAMILIES`] so that `/metrics` always lists it, with its help.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// Name, kind, help, and the label names its samples carry (in this order).
const FAMILIES: &[(&str, Kind, &str, &[&str])] = &[
    (
        AUTHORIZATIONS,
        Kind::Counter,
        "Authorize calls by decision (allow, action, reject) and reason.",
        &["decision", "reason"],
    ),
    (
        AUTHORIZE_SECONDS,
        Kind::Histogram,
        "Time to answer an authorize call.",
        &[],
    ),
    (
        SETTLEMENTS,
        Kind::Counter,
        "Settlements by outcome (posted, voided, replayed, refused).",
        &["outcome"],
    ),
    (
        SETTLE_SECONDS,
        Kind::Histogram,
        "Time to answer a settle call.",
        &[],
    ),
    (
        BALANCES_DEPLETED,
        Kind::Counter,
        "Charges after which the user's balance could not pay for another such request.",
        &[],
    ),
    (
        HOLD_EXPIRIES,
        Kind::Counter,
        "Holds resolved by the sweeper because no settlement arrived, by policy.",
        &["policy"],
    ),
    (
        DATABASE_ERRORS,
        Kind::Counter,
        "Operations that failed on a database error, by operation.",
        &["operation"],
    ),
];

pub const AUTHORIZATIONS: &str = "tollgate_ledger_authorizations_total";
pub const AUTHORIZE_SECONDS: &str = "tollgate_ledger_authorize_duration_seconds";
pub const SETTLEMENTS: &str = "tollgate_ledger_settlements_total";
pub const SETTLE_SECONDS: &str = "tollgate_ledger_settle_duration_seconds";
pub const BALANCES_DEPLETED: &str = "tollgate_ledger_balances_depleted_total";
pub const HOLD_EXPIRIES: &str = "tollgate_ledger_hold_expiries_total";
pub const DATABASE_ERRORS: &str = "tollgate_ledger_database_errors_total";

/// Upper bounds (seconds) of the latency buckets: 1 ms to 5 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Count per bucket of `BUCKETS` (not cumulative), then the overflow.
    counts: Vec<u64>,
    sum_micros: u64,
    count: u64,
}

type Key = (&'static str, Vec<String>);

#[derive(Default)]
struct Registry {
    counters: BTreeMap<Key, u64>,
    histograms: BTreeMap<Key, Histogram>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    // A poisoned lock only means a panic elsewhere mid-update; counts stay usable.
    let mut guard = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

/// Adds one to a counter; `labels` are the values of the family's label names.
pub fn count(name: &'static str, labels: &[&str]) {
    count_by(name, labels, 1);
}

pub fn count_by(name: &'static str, labels: &[&str], n: u64) {
    with(|r| {
        *r.counters
            .entry((name, labels.iter().map(|l| l.to_string()).collect()))
            .or_default() += n;
    });
}

/// Records one observation of a latency histogram.
pub fn observe(name: &'static str, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    let bucket = BUCKETS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(BUCKETS.len());
    with(|r| {
        let h = r.histograms.entry((name, Vec::new())).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len() + 1];
        }
        if let Some(c) = h.counts.get_mut(bucket) {
            *c += 1;
        }
        h.count += 1;
        h.sum_micros = h
            .sum_micros
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    });
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String], extra: Option<(&str, String)>) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        pairs.push(format!("{n}=\"{v}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// The Prometheus text exposition (format 0.0.4) of every family.
pub fn render() -> String {
    with(|r| {
        let mut out = String::new();
        for (name, kind, help, label_names) in FAMILIES {
            let kind_text = match kind {
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind_text}");
            match kind {
                Kind::Counter => {
                    let samples: Vec<_> =
                        r.counters.iter().filter(|((n, _), _)| n == name).collect();
                    if samples.is_empty() && label_names.is_empty() {
                        let _ = writeln!(out, "{name} 0");
                    }
                    for ((_, values), v) in samples {
                        let _ =
                            writeln!(out, "{name}{} {v}", label_text(label_names, values, None));
                    }
                }
                Kind::Histogram => {
                    let empty = Histogram {
                        counts: vec![0; BUCKETS.len() + 1],
                        ..Histogram::default()
                    };
                    let h = r.histograms.get(&(*name, Vec::new())).unwrap_or(&empty);
                    let mut cumulative = 0;
                    for (i, bound) in BUCKETS.iter().enumerate() {
                        cumulative += h.counts.get(i).copied().unwrap_or(0);
                        let le = label_text(&[], &[], Some(("le", bound.to_string())));
                        let _ = writeln!(out, "{name}_bucket{le} {cumulative}");
                    }
                    let inf = label_text(&[], &[], Some(("le", "+Inf".into())));
                    let _ = writeln!(out, "{name}_bucket{inf} {}", h.count);
                    let sum = h.sum_micros as f64 / 1e6;
                    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", h.count);
                }
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        count(AUTHORIZATIONS, &["reject", "model_not_found"]);
        count(AUTHORIZATIONS, &["reject", "model_not_found"]);
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
        // Families without samples are still declared.
        assert!(text.contains("tollgate_ledger_balances_depleted_total 0"));
        assert!(text.contains("# HELP tollgate_ledger_hold_expiries_total"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_text(&["a"], &["x\"y\\z\n".into()], None),
            "{a=\"x\\\"y\\\\z\\n\"}"
        );
    }
}
