//! Pricing EIP-1559 transactions: the first price from the market, the price of a
//! replacement at the same nonce, and how much harder an answer is pushed as its deadline
//! nears. Pure functions of the market and the previous price.

/// An EIP-1559 price, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`: the most paid per gas, base fee included.
    pub max_fee_per_gas: u128,
    /// `maxPriorityFeePerGas`: the tip.
    pub max_priority_fee_per_gas: u128,
}

/// What the chain asks now, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Market {
    /// The base fee of the next block (the latest block's, when the node does not say).
    pub base_fee: u128,
    /// A tip that gets a transaction into a block (the median of recent blocks' 20th
    /// percentile tips, as alloy's estimator computes it; at least 1 wei).
    pub tip: u128,
}

/// How close a transaction is to its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Urgency {
    /// No deadline, or more than half of the time it had left.
    Normal,
    /// Half of its time is gone: re-priced every block, harder.
    Urgent,
    /// A quarter of its time is left (or less than the alarm margin): re-priced every block,
    /// hardest, up to the deadline cap.
    Critical,
}

impl Urgency {
    /// The urgency of a transaction with `margin` seconds of chain time left before its
    /// deadline, out of `initial` when it was first seen, given an alarm margin.
    pub fn of(margin: u64, initial: u64, alarm_margin: u64) -> Self {
        if margin <= alarm_margin || margin.saturating_mul(4) <= initial {
            Self::Critical
        } else if margin.saturating_mul(2) <= initial {
            Self::Urgent
        } else {
            Self::Normal
        }
    }

    /// How many next-block base fees the price allows for (a base fee can rise 12.5% a
    /// block: 2 covers about six full blocks in a row).
    fn base_fee_multiplier(self) -> u128 {
        match self {
            Self::Normal => 2,
            Self::Urgent => 3,
            Self::Critical => 4,
        }
    }

    /// How many market tips the price offers.
    fn tip_multiplier(self) -> u128 {
        match self {
            Self::Normal => 1,
            Self::Urgent => 2,
            Self::Critical => 4,
        }
    }
}

/// The price of a first attempt: `multiplier × base fee + tip`, the tip scaled by urgency,
/// within `cap` (the tip never above the max fee).
pub fn first_price(market: Market, urgency: Urgency, cap: u128) -> Fees {
    let tip = market.tip.max(1).saturating_mul(urgency.tip_multiplier());
    let max_fee = market.base_fee.saturating_mul(urgency.base_fee_multiplier()).saturating_add(tip);
    let max_fee = max_fee.min(cap).max(1);
    Fees { max_fee_per_gas: max_fee, max_priority_fee_per_gas: tip.min(max_fee) }
}

/// `value` raised by `percent`, rounded up, and by at least 1.
fn raised(value: u128, percent: u64) -> u128 {
    let raise = value.saturating_mul(u128::from(percent)).div_ceil(100).max(1);
    value.saturating_add(raise)
}

/// The price of a replacement of an attempt priced `previous`, at the same nonce: what the
/// market asks now at this urgency, and at least `bump_percent` more than `previous` on both
/// the max fee and the tip (nodes refuse a replacement that raises either by less than 10%).
/// `None` when `cap` leaves no room for such a raise: the previous attempt stands.
pub fn replacement_price(
    previous: Fees,
    market: Market,
    urgency: Urgency,
    bump_percent: u64,
    cap: u128,
) -> Option<Fees> {
    let market_tip = market.tip.max(1).saturating_mul(urgency.tip_multiplier());
    let tip = market_tip.max(raised(previous.max_priority_fee_per_gas, bump_percent));
    let for_market = market.base_fee.saturating_mul(urgency.base_fee_multiplier()).saturating_add(tip);
    let max_fee = for_market.max(raised(previous.max_fee_per_gas, bump_percent));
    let max_fee = max_fee.min(cap);
    let tip = tip.min(max_fee);
    let enough = max_fee >= raised(previous.max_fee_per_gas, bump_percent)
        && tip >= raised(previous.max_priority_fee_per_gas, bump_percent);
    enough.then_some(Fees { max_fee_per_gas: max_fee, max_priority_fee_per_gas: tip })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GWEI: u128 = 1_000_000_000;

    #[test]
    fn urgency_grows_as_the_deadline_nears() {
        assert_eq!(Urgency::of(100, 100, 5), Urgency::Normal);
        assert_eq!(Urgency::of(51, 100, 5), Urgency::Normal);
        assert_eq!(Urgency::of(50, 100, 5), Urgency::Urgent);
        assert_eq!(Urgency::of(25, 100, 5), Urgency::Critical);
        assert_eq!(Urgency::of(5, 8, 5), Urgency::Critical, "within the alarm margin");
        assert_eq!(Urgency::of(0, 0, 0), Urgency::Critical);
    }

    #[test]
    fn a_first_price_covers_base_fee_rises_and_pays_more_when_urgent() {
        let market = Market { base_fee: 10 * GWEI, tip: GWEI };
        let normal = first_price(market, Urgency::Normal, u128::MAX);
        assert_eq!(normal, Fees { max_fee_per_gas: 21 * GWEI, max_priority_fee_per_gas: GWEI });
        let critical = first_price(market, Urgency::Critical, u128::MAX);
        assert_eq!(critical, Fees { max_fee_per_gas: 44 * GWEI, max_priority_fee_per_gas: 4 * GWEI });
        // Within the cap, the tip never above the max fee.
        let capped = first_price(market, Urgency::Critical, 3 * GWEI);
        assert_eq!(capped, Fees { max_fee_per_gas: 3 * GWEI, max_priority_fee_per_gas: 3 * GWEI });
        // A zero tip market still tips one wei.
        assert_eq!(first_price(Market { base_fee: 0, tip: 0 }, Urgency::Normal, u128::MAX).max_priority_fee_per_gas, 1);
    }

    #[test]
    fn a_replacement_follows_a_fee_spike_and_always_raises_both_fees_enough() {
        let before = first_price(Market { base_fee: GWEI, tip: GWEI }, Urgency::Normal, u128::MAX);
        // The base fee jumped fiftyfold: the replacement prices from it.
        let spike = Market { base_fee: 50 * GWEI, tip: GWEI };
        let after = replacement_price(before, spike, Urgency::Normal, 25, u128::MAX).unwrap();
        assert_eq!(after.max_fee_per_gas, 100 * GWEI + raised(GWEI, 25));
        assert_eq!(after.max_priority_fee_per_gas, raised(GWEI, 25));
        // A quiet market: still at least 25% more on both, so that nodes accept the replacement.
        let quiet = Market { base_fee: GWEI / 2, tip: 1 };
        let again = replacement_price(after, quiet, Urgency::Normal, 25, u128::MAX).unwrap();
        assert!(again.max_fee_per_gas >= raised(after.max_fee_per_gas, 25));
        assert!(again.max_priority_fee_per_gas >= raised(after.max_priority_fee_per_gas, 25));
        // Tiny values still rise.
        let tiny = Fees { max_fee_per_gas: 2, max_priority_fee_per_gas: 1 };
        let up = replacement_price(tiny, Market { base_fee: 0, tip: 0 }, Urgency::Normal, 10, u128::MAX).unwrap();
        assert!(up.max_fee_per_gas >= 3 && up.max_priority_fee_per_gas >= 2);
    }

    #[test]
    fn the_cap_bounds_replacements_and_stops_them_when_no_valid_raise_fits() {
        let before = Fees { max_fee_per_gas: 90 * GWEI, max_priority_fee_per_gas: 2 * GWEI };
        let spike = Market { base_fee: 500 * GWEI, tip: GWEI };
        let capped = replacement_price(before, spike, Urgency::Urgent, 10, 100 * GWEI).unwrap();
        assert_eq!(capped.max_fee_per_gas, 100 * GWEI);
        assert!(replacement_price(capped, spike, Urgency::Urgent, 10, 100 * GWEI).is_none(), "nothing left");
        // Deadline transactions bump harder: a critical replacement of the same price offers more.
        let market = Market { base_fee: 10 * GWEI, tip: GWEI };
        let normal = replacement_price(before, market, Urgency::Normal, 10, u128::MAX).unwrap();
        let critical = replacement_price(before, market, Urgency::Critical, 10, u128::MAX).unwrap();
        assert!(critical.max_priority_fee_per_gas > normal.max_priority_fee_per_gas);
    }
}
