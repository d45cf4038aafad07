//! Exponential backoff with jitter, for the retry loops of both sides: the
//! filter's settlement deliveries and the sidecar's webhook deliveries.
//! Hand-written on purpose: a few lines of integer arithmetic, where a crate
//! would add weight to the wasm filter and still need a random source the VM
//! does not have (the jitter comes from a hash of the retried item's id).

/// The longest wait before retry number `attempts` (1 = after the first
/// failure): `initial_ms` doubled per earlier failure, capped at `max_ms`.
pub fn backoff_ms(initial_ms: u64, max_ms: u64, attempts: u32) -> u64 {
    let factor = 1u64
        .checked_shl(attempts.saturating_sub(1).min(63))
        .unwrap_or(u64::MAX);
    initial_ms.saturating_mul(factor).min(max_ms)
}

/// `wait` shortened by up to a quarter, by an amount drawn from `seed` and
/// `attempts`: items that failed together (a sidecar restart, an endpoint
/// outage) come back spread out instead of all at once. Deterministic: the
/// same item's same retry waits the same.
pub fn with_jitter(wait_ms: u64, seed: u64, attempts: u32) -> u64 {
    let spread = wait_ms / 4;
    wait_ms - mix(seed ^ u64::from(attempts)) % (spread + 1)
}

/// A seed for [`with_jitter`] from an id (FNV-1a).
pub fn jitter_seed(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: spreads nearby seeds over the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(100, 1000, 1), 100);
        assert_eq!(backoff_ms(100, 1000, 4), 800);
        assert_eq!(backoff_ms(100, 1000, 5), 1000);
        assert_eq!(backoff_ms(100, 1000, u32::MAX), 1000);
        assert_eq!(backoff_ms(100, 1000, 0), 100);
    }

    #[test]
    fn jitter_stays_within_the_last_quarter_and_spreads_items() {
        let waits: Vec<u64> = (0..200)
            .map(|i| with_jitter(1000, jitter_seed(&format!("hold_{i}")), 3))
            .collect();
        assert!(waits.iter().all(|w| (750..=1000).contains(w)));
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
        // Deterministic per item and retry.
        let seed = jitter_seed("hold_x");
        assert_eq!(with_jitter(1000, seed, 2), with_jitter(1000, seed, 2));
        assert_eq!(with_jitter(0, seed, 2), 0);
        assert_eq!(with_jitter(3, seed, 2), 3);
    }
}
