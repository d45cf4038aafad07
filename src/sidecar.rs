//! Calls to the sidecar, as the stream (authorize) and the root context
//! (settle) make them: one place builds the callout and its headers, and one
//! place says what a settle answer means for the queue.

use crate::config::FilterConfig;
use crate::host::Callout;
use tollgate_protocol::INTERNAL_SECRET_HEADER;

/// A POST of `body` to the sidecar's internal API, with the secret that
/// proves it comes from the filter and the request id that ties it to a request.
pub fn sidecar_callout(
    config: &FilterConfig,
    path: &str,
    request_id: &str,
    body: Vec<u8>,
) -> Callout {
    Callout {
        cluster: config.sidecar_cluster.clone(),
        headers: vec![
            (":method".into(), "POST".into()),
            (":path".into(), path.into()),
            (":authority".into(), config.sidecar_authority.clone()),
            ("content-type".into(), "application/json".into()),
            (
                INTERNAL_SECRET_HEADER.into(),
                config.internal_secret.clone(),
            ),
            ("x-request-id".into(), request_id.into()),
        ],
        body,
        timeout: config.callout_timeout,
    }
}

/// What the sidecar's answer to a settlement means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleAnswer {
    /// Settled (or already settled): done.
    Acknowledged,
    /// A 4xx other than 408 and 429 will not change on retry (unknown hold,
    /// wrong secret): log it and drop it.
    Refused,
    /// No answer, a timeout, a throttle or a 5xx: retry with backoff.
    Retry,
}

impl SettleAnswer {
    pub fn of(status: Option<u16>) -> SettleAnswer {
        match status {
            Some(200) => SettleAnswer::Acknowledged,
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => SettleAnswer::Refused,
            _ => SettleAnswer::Retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_permanent_refusal_is_dropped() {
        assert_eq!(SettleAnswer::of(Some(200)), SettleAnswer::Acknowledged);
        for s in [400, 403, 404, 422] {
            assert_eq!(SettleAnswer::of(Some(s)), SettleAnswer::Refused, "{s}");
        }
        for s in [Some(408), Some(429), Some(500), Some(503), Some(302), None] {
            assert_eq!(SettleAnswer::of(s), SettleAnswer::Retry, "{s:?}");
        }
    }
}
