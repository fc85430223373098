//! One asset of a DirectFund (ADR-0022 §2): the two deposits of that asset, in order (the
//! leader's amount first, then the follower's), and where our own deposit stands.
//!
//! Assets are independent: `deposit` checks only `holdings[asset][channel]`, so deposits of
//! different assets may be in flight together; the postfund waits for every asset.

use super::{chain_view::ChainView, ObjectiveId, TransactionRequest, WaitingFor};
use crate::{chain::ChainTransaction, Address, ChannelId, U256};

/// Chain time (seconds of block timestamps) to wait for our deposit to show up on chain,
/// final at the configured depth, before asking for it again. The transaction manager lands
/// what it was given (retrying, re-pricing, and merging an identical request while the first is
/// in flight), so this is only a backstop for a request lost on the way to it; measured in chain
/// time so that a slow chain, not a fast timer, decides.
pub(crate) const DEPOSIT_PATIENCE_SECS: u64 = 180;

/// The funding of one asset of a ledger: the two amounts (leader's, follower's) and the state
/// of our own deposit.
///
/// Its field names are those DirectFund records had before multi-asset ledgers, so a stored
/// single-asset DirectFund reads back unchanged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AssetFunding {
    /// The asset.
    pub asset: Address,
    /// What the leader and the follower deposit, in this order.
    pub amounts: [U256; 2],
    /// Our deposit was asked for (and has not failed or been taken back since).
    pub deposit_submitted: bool,
    /// Our deposit failed: asked for again at the next timer tick.
    pub deposit_failed: bool,
    /// Chain time (block timestamp) when our deposit was last asked for.
    pub submitted_at: u64,
}

impl AssetFunding {
    /// The funding of `asset` with `amounts` (leader's, follower's), nothing deposited yet.
    pub fn new(asset: Address, amounts: [U256; 2]) -> Self {
        Self { asset, amounts, deposit_submitted: false, deposit_failed: false, submitted_at: 0 }
    }

    /// What the channel holds of this asset once both have deposited.
    pub fn total(&self) -> U256 {
        self.amounts[0].saturating_add(self.amounts[1])
    }

    /// What the channel holds when our deposit (party `me`) is due (the deposits before ours),
    /// and once it is made.
    pub fn my_range(&self, me: usize) -> (U256, U256) {
        let before = self.amounts[..me].iter().fold(U256::ZERO, |a, b| a.saturating_add(*b));
        (before, before.saturating_add(self.amounts[me]))
    }

    /// Whether the chain holds this asset's total.
    pub fn is_funded(&self, channel: &ChannelId, chain: &ChainView) -> bool {
        chain.holdings(channel, self.asset) >= self.total()
    }

    /// Our deposit, when it is due: holdings in `[before, before + mine)`, `expectedHeld` =
    /// the holdings, amount = the rest (so holdings a stranger gave are absorbed). Marks it
    /// asked for at chain time `now`.
    pub fn due_deposit(
        &mut self,
        id: ObjectiveId,
        channel: ChannelId,
        me: usize,
        chain: &ChainView,
    ) -> Option<TransactionRequest> {
        let held = chain.holdings(&channel, self.asset);
        let (before, mine_until) = self.my_range(me);
        if self.deposit_submitted || held >= self.total() || held < before || held >= mine_until {
            return None;
        }
        self.deposit_submitted = true;
        self.submitted_at = chain.now();
        Some(TransactionRequest {
            objective: Some(id),
            transaction: ChainTransaction::Deposit {
                channel_id: channel,
                asset: self.asset,
                expected_held: held,
                amount: mine_until - held,
            },
            deadline: None,
        })
    }

    /// On a timer: our deposit allowed again if it failed, or if it has not shown up after
    /// [`DEPOSIT_PATIENCE_SECS`] of chain time (a second copy cannot double-fund: its
    /// `expectedHeld` is the holdings seen then).
    pub fn on_timer(&mut self, now: u64) {
        let patience_over = now >= self.submitted_at.saturating_add(DEPOSIT_PATIENCE_SECS);
        if self.deposit_failed || (self.deposit_submitted && patience_over) {
            self.deposit_failed = false;
            self.deposit_submitted = false;
        }
    }

    /// A reorg took back blocks of this channel: our deposit is due again if the holdings of
    /// this asset no longer include it.
    pub fn on_retracted(&mut self, channel: &ChannelId, me: usize, chain: &ChainView) {
        let (_, mine_until) = self.my_range(me);
        if chain.holdings(channel, self.asset) < mine_until {
            self.deposit_submitted = false;
            self.deposit_failed = false;
        }
    }

    /// What this asset waits for, if it is not funded.
    pub fn waiting_for(&self, channel: &ChannelId, me: usize, chain: &ChainView) -> Option<WaitingFor> {
        let held = chain.holdings(channel, self.asset);
        if held >= self.total() {
            return None;
        }
        let (before, _) = self.my_range(me);
        let target = self.total();
        Some(if held >= before && self.deposit_submitted {
            WaitingFor::DepositConfirmation { held, target }
        } else {
            WaitingFor::Deposits { held, target }
        })
    }

    /// Whether our deposit of this asset may be on chain.
    pub fn has_committed(&self, channel: &ChannelId, me: usize, chain: &ChainView) -> bool {
        let (before, _) = self.my_range(me);
        self.deposit_submitted || (!self.amounts[me].is_zero() && chain.holdings(channel, self.asset) > before)
    }
}
