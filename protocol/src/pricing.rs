//! Prices and their arithmetic. Integer maths only: prices are micro-units per
//! million tokens, the markup is in basis points, and the single rounding step
//! rounds the final amount *up* to the next micro-unit (the platform never
//! undercharges by a fraction), then applies the per-request minimum.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriceRule {
    /// `<model>@v<version>`, stamped on every hold and charge.
    pub id: String,
    pub model: String,
    pub version: i64,
    pub input_per_m: i64,
    pub cached_input_per_m: i64,
    pub output_per_m: i64,
    pub markup_bps: i64,
    pub min_charge: i64,
}

const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;
const BPS: i128 = 10_000;

impl PriceRule {
    pub fn rule_id(model: &str, version: i64) -> String {
        format!("{model}@v{version}")
    }

    /// Price of a usage in micro-units: `ceil(Σ tokens × price × (1 + markup) / 1e6)`,
    /// at least `min_charge`. Cached prompt tokens are part of `prompt_tokens`.
    pub fn cost(
        &self,
        prompt_tokens: u64,
        cached_prompt_tokens: u64,
        completion_tokens: u64,
    ) -> i64 {
        self.priced(
            prompt_tokens,
            cached_prompt_tokens,
            completion_tokens,
            self.markup_bps,
        )
        .max(self.min_charge)
    }

    /// What the provider bills for a usage: the same prices without the
    /// markup or the minimum, rounded up the same way. Never above `cost`.
    pub fn provider_cost(
        &self,
        prompt_tokens: u64,
        cached_prompt_tokens: u64,
        completion_tokens: u64,
    ) -> i64 {
        self.priced(prompt_tokens, cached_prompt_tokens, completion_tokens, 0)
    }

    /// `ceil(Σ tokens × price × (1 + markup_bps / 1e4) / 1e6)`, saturating.
    fn priced(
        &self,
        prompt_tokens: u64,
        cached_prompt_tokens: u64,
        completion_tokens: u64,
        markup_bps: i64,
    ) -> i64 {
        let cached = cached_prompt_tokens.min(prompt_tokens);
        let uncached = prompt_tokens - cached;
        // Prices and markups are never negative (configuration and the admin
        // API refuse them); a stored negative one is read as zero.
        let term =
            |tokens: u64, price: i64| i128::from(tokens).checked_mul(i128::from(price.max(0)));
        let denom = TOKENS_PER_PRICE_UNIT * BPS;
        let amount = term(uncached, self.input_per_m)
            .and_then(|a| a.checked_add(term(cached, self.cached_input_per_m)?))
            .and_then(|a| a.checked_add(term(completion_tokens, self.output_per_m)?))
            .and_then(|raw| raw.checked_mul(BPS + i128::from(markup_bps.max(0))))
            .and_then(|scaled| scaled.checked_add(denom - 1))
            .map(|scaled| scaled / denom);
        // Beyond i64 (absurd prices × absurd counts) the cost saturates: such a
        // request can never be afforded, rather than wrapping to a small price.
        amount
            .and_then(|a| i64::try_from(a).ok())
            .unwrap_or(i64::MAX)
    }

    /// The most a request can cost: the prompt estimate at the input price plus
    /// the maximum output at the output price.
    pub fn max_cost(&self, prompt_tokens: u64, max_output_tokens: u64) -> i64 {
        self.cost(prompt_tokens, 0, max_output_tokens)
    }

    /// The largest per-choice output (at most `wanted`) whose maximum cost fits
    /// `budget`; None when not even the prompt fits.
    pub fn affordable_output(
        &self,
        prompt_tokens: u64,
        choices: u64,
        wanted: u64,
        budget: i64,
    ) -> Option<u64> {
        let fits = |k: u64| self.max_cost(prompt_tokens, k.saturating_mul(choices)) <= budget;
        if !fits(0) {
            return None;
        }
        let (mut lo, mut hi) = (0u64, wanted); // fits(lo) holds
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(input: i64, output: i64, markup_bps: i64) -> PriceRule {
        PriceRule {
            id: "m@v1".into(),
            model: "m".into(),
            version: 1,
            input_per_m: input,
            cached_input_per_m: input / 2,
            output_per_m: output,
            markup_bps,
            min_charge: 0,
        }
    }

    #[test]
    fn extreme_inputs_saturate_instead_of_wrapping() {
        let mut r = rule(i64::MAX, i64::MAX, 0);
        r.markup_bps = i64::from(u32::MAX);
        assert_eq!(r.cost(u64::MAX, 0, u64::MAX), i64::MAX);
        assert_eq!(r.cost(0, 0, 0), 0);
        let negative = rule(-5, -5, -20_000);
        assert_eq!(negative.cost(1_000_000, 0, 1_000_000), 0);
    }

    #[test]
    fn cost_is_exact_for_whole_amounts() {
        // $2.50 / M input, $10 / M output: 1M in + 1M out = $12.50
        let r = rule(2_500_000, 10_000_000, 0);
        assert_eq!(r.cost(1_000_000, 0, 1_000_000), 12_500_000);
        assert_eq!(r.cost(0, 0, 0), 0);
    }

    #[test]
    fn cost_rounds_up_once_at_the_end() {
        let r = rule(1, 1, 0);
        assert_eq!(r.cost(1, 0, 0), 1); // 1e-6 micro rounds up to 1
        assert_eq!(r.cost(1_000_000, 0, 0), 1);
        assert_eq!(r.cost(1_000_001, 0, 0), 2);
    }

    #[test]
    fn markup_and_cached_tokens() {
        let r = rule(2_000_000, 8_000_000, 2_000); // +20 %
                                                   // 1000 prompt (400 cached) + 100 completion:
                                                   // 600×2 + 400×1 + 100×8 = 2400 micro-units before markup → 2880
        assert_eq!(r.cost(1000, 400, 100), 2880);
        // cached larger than prompt is clamped
        assert_eq!(r.cost(10, 50, 0), r.cost(10, 10, 0));
        // The provider's share is the same usage without the markup.
        assert_eq!(r.provider_cost(1000, 400, 100), 2400);
    }

    #[test]
    fn provider_cost_ignores_markup_and_minimum() {
        let mut r = rule(1_000_000, 1_000_000, 5_000);
        r.min_charge = 100;
        assert_eq!(r.provider_cost(3, 0, 4), 7);
        assert_eq!(r.cost(3, 0, 4), 100);
        assert_eq!(r.provider_cost(0, 0, 0), 0);
        assert_eq!(r.provider_cost(1, 0, 0), 1); // rounds up like the price
    }

    #[test]
    fn minimum_charge_applies() {
        let mut r = rule(1, 1, 0);
        r.min_charge = 100;
        assert_eq!(r.cost(1, 0, 1), 100);
    }

    #[test]
    fn affordable_output_is_the_largest_that_fits() {
        let r = rule(2_000_000, 8_000_000, 0); // 2 and 8 micro-units per token
                                               // 100 prompt = 200; budget 1000 leaves 800 = 100 output tokens.
        assert_eq!(r.affordable_output(100, 1, 500, 1000), Some(100));
        assert_eq!(r.affordable_output(100, 2, 500, 1000), Some(50));
        assert_eq!(r.affordable_output(100, 1, 40, 1000), Some(40));
        assert_eq!(r.affordable_output(100, 1, 500, 199), None);
        for budget in [200, 201, 207, 208, 999, 100_000] {
            let k = r.affordable_output(100, 1, 10_000, budget).unwrap();
            assert!(
                r.max_cost(100, k) <= budget && (k == 10_000 || r.max_cost(100, k + 1) > budget)
            );
        }
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        let r = rule(i64::MAX, i64::MAX, 10_000);
        assert_eq!(
            r.cost(u64::from(u32::MAX), 0, u64::from(u32::MAX)),
            i64::MAX
        );
    }
}
