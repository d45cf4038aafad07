//! Crash-test hooks, compiled only with the `faults` cargo feature (the
//! tests enable it; release builds never have it). With the feature,
//! `TOLLGATE_FAULT_PAUSE="settle.before_commit=3000"` makes the named point
//! wait that many milliseconds, so a test can SIGKILL the process at a known
//! place (inside a transaction, or after its commit but before the answer).
//! Without the feature every point is a no-op and the variable is never read.

/// Inside the settle transaction, before its commit.
pub const SETTLE_BEFORE_COMMIT: &str = "settle.before_commit";
/// After the settle commit, before the answer.
pub const SETTLE_AFTER_COMMIT: &str = "settle.after_commit";
/// Inside a deposit's or manual charge's transaction (key and response
/// recorded), before its commit.
pub const MOVEMENT_BEFORE_COMMIT: &str = "movement.before_commit";
/// After a deposit's or manual charge's commit, before the answer.
pub const MOVEMENT_AFTER_COMMIT: &str = "movement.after_commit";

/// Inside a Stripe event's transaction (event row and money), before its commit.
pub const STRIPE_EVENT_BEFORE_COMMIT: &str = "stripe_event.before_commit";

/// Whether this build can pause at all.
pub const ENABLED: bool = cfg!(feature = "faults");

#[cfg(feature = "faults")]
fn configured() -> &'static Vec<(String, u64)> {
    static PAUSES: std::sync::OnceLock<Vec<(String, u64)>> = std::sync::OnceLock::new();
    PAUSES.get_or_init(|| {
        std::env::var("TOLLGATE_FAULT_PAUSE")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let (point, ms) = item.trim().split_once('=')?;
                Some((point.to_string(), ms.parse().ok()?))
            })
            .collect()
    })
}

#[cfg(feature = "faults")]
pub async fn pause(point: &str) {
    if let Some((_, ms)) = configured().iter().find(|(p, _)| p == point) {
        tracing::warn!(point, ms, "fault injection: pausing");
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
}

#[cfg(not(feature = "faults"))]
#[inline(always)]
pub async fn pause(_point: &str) {}
