//! Crash-test hooks. `TOLLGATE_FAULT_PAUSE="settle.before_commit=3000"` makes
//! the named point wait that many milliseconds, so a test can SIGKILL the
//! process at a known place (inside the settle transaction, or after its
//! commit but before the answer). Unset in production: then every point is a
//! no-op.

use std::sync::OnceLock;
use std::time::Duration;

pub const SETTLE_BEFORE_COMMIT: &str = "settle.before_commit";
pub const SETTLE_AFTER_COMMIT: &str = "settle.after_commit";

fn configured() -> &'static Vec<(String, u64)> {
    static PAUSES: OnceLock<Vec<(String, u64)>> = OnceLock::new();
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

pub async fn pause(point: &str) {
    if let Some((_, ms)) = configured().iter().find(|(p, _)| p == point) {
        tracing::warn!(point, ms, "fault injection: pausing");
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}
