//! A party's side of partial withdrawal (ADR-0022 §5): asking for one, following a ledger to
//! its successor once the old one concluded, and learning what the conclusion credited the
//! successor (the adjudicator emits no `Deposited` for an internal credit).

use alloy_primitives::keccak256;

use super::{
    objective::Crank, Effects, Entry, Objective, ObjectiveId, Party, PartyError, PartyEvent, StateKey, Withdraw,
};
use crate::{chain::after_transfer, ChannelId, U256};

impl Party {
    /// Withdraws `amount` of our own funds from `ledger` (or from its successor, if it was
    /// migrated already) to chain, keeping every virtual channel it funds: the ledger migrates
    /// to a new one holding the rest. Refused while proposals or changes wait in the ledger, a
    /// guarantee is being added or removed, the ledger is closing or migrating already, or
    /// `amount` is zero or above our balance. Returns the objective id.
    pub fn withdraw(&mut self, ledger: ChannelId, amount: U256) -> Result<(ObjectiveId, Effects), PartyError> {
        let ledger = self.current_ledger(ledger);
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        let asset = channel.consensus_outcome().asset();
        self.withdraw_in(ledger, asset, amount)
    }

    /// Withdraws `amount` of `asset` from our balance in `ledger` (ADR-0022 §5), the ledger's
    /// other assets carried whole into the successor; refused as [`Party::withdraw`] is, and for
    /// an asset the ledger does not hold.
    pub fn withdraw_in(
        &mut self,
        ledger: ChannelId,
        asset: crate::Address,
        amount: U256,
    ) -> Result<(ObjectiveId, Effects), PartyError> {
        let ledger = self.current_ledger(ledger);
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        if amount.is_zero() {
            return Err(PartyError::BadRequest("a withdrawal of zero".into()));
        }
        if self.closing.contains(&ledger) {
            return Err(PartyError::LedgerClosing(ledger));
        }
        let id = ObjectiveId::Withdraw(ledger);
        if self.migrating(&ledger) {
            return Err(PartyError::ObjectiveExists(id));
        }
        if self.topping_up(&ledger) {
            return Err(PartyError::TopUpPending);
        }
        if self.changes.get(&ledger).is_some_and(|c| !c.is_empty()) {
            return Err(PartyError::ProposalsPending);
        }
        let me = self.address();
        let consensus = channel.consensus_state();
        let my_index =
            consensus.state().participants.iter().position(|p| *p == me).ok_or(PartyError::NotAParticipant)?;
        let mut amounts = [U256::ZERO; 2];
        amounts[my_index] = amount;
        // A nonce no earlier withdrawal from this ledger state used with other amounts: a
        // retry of the same withdrawal signs exactly the same states again.
        let mut seed = ledger.to_vec();
        seed.extend_from_slice(&amounts[0].to_be_bytes::<32>());
        seed.extend_from_slice(&amounts[1].to_be_bytes::<32>());
        seed.extend_from_slice(&channel.highest_turn().to_be_bytes::<6>());
        if channel.consensus_outcome().is_multi_asset() {
            seed.extend_from_slice(asset.as_slice()); // (a one-asset ledger's nonce as before)
        }
        let digest = keccak256(&seed);
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&digest[..8]);
        let objective = Withdraw::new(channel, asset, amounts, u64::from_be_bytes(nonce), true)?;
        // A withdrawal that failed before anything was committed may be asked for again.
        self.forget_failed_withdrawal(id, None);
        if self.objectives.contains_key(&id) {
            return Err(PartyError::ObjectiveExists(id));
        }
        self.start(Objective::Withdraw(objective))
    }

    /// Forgets objective `id` if it is a withdrawal that failed without committing anything
    /// (we never signed its final state) and `incoming` (a peer's state for it, if any) is of
    /// another successor: a new withdrawal from the same ledger takes its id. A late copy of
    /// the failed attempt's own states stays with it (and is signed no more).
    pub(crate) fn forget_failed_withdrawal(&mut self, id: ObjectiveId, incoming: Option<ChannelId>) {
        let me = self.address();
        let stale = matches!(
            self.objectives.get(&id),
            Some(Entry { objective: Objective::Withdraw(w), done: false })
                if w.failure().is_some() && !w.signed_final(me)
                    && incoming.is_none_or(|c| c != w.successor() && c != w.channel_id())
        );
        if stale {
            self.objectives.remove(&id);
            self.finished_ticks.remove(&id);
            self.touch(StateKey::Objective(id));
        }
    }

    /// The ledger that replaced `ledger` through withdrawals (itself if none did).
    pub fn current_ledger(&self, ledger: ChannelId) -> ChannelId {
        let mut current = ledger;
        // Bounded: each link is a concluded ledger; a cycle cannot form (fresh ids).
        for _ in 0..=self.successors.len() {
            match self.successors.get(&current) {
                Some(next) => current = *next,
                None => break,
            }
        }
        current
    }

    /// The successor of a migrated ledger, if it was migrated.
    pub fn successor(&self, ledger: &ChannelId) -> Option<ChannelId> {
        self.successors.get(ledger).copied()
    }

    /// Whether a withdrawal from `ledger` is under way (its changes wait).
    pub(crate) fn migrating(&self, ledger: &ChannelId) -> bool {
        matches!(
            self.objectives.get(&ObjectiveId::Withdraw(*ledger)),
            Some(Entry { objective: Objective::Withdraw(w), done: false }) if w.failure().is_none()
        )
    }

    /// `from` concluded and `to` is funded: everything that named `from` names `to`. Returns
    /// whether we were taking `from` to chain (the exit is to continue in `to`).
    pub(crate) fn follow_successor(&mut self, from: ChannelId, to: ChannelId, effects: &mut Effects) -> bool {
        self.successors.insert(from, to);
        self.touch(StateKey::Party);
        let mut touched = Vec::new();
        // Finished fundings too: a virtual channel's defund takes its path from them.
        for (id, entry) in self.objectives.iter_mut() {
            entry.objective.follow_successor(from, to);
            touched.push(*id);
        }
        for id in touched {
            self.touch(StateKey::Objective(id));
        }
        if let Some(waiting) = self.changes.remove(&from) {
            self.changes.entry(to).or_default().extend(waiting);
        }
        self.deferred.remove(&from);
        effects.events.push(PartyEvent::LedgerMigrated { from, to });
        self.objectives.contains_key(&ObjectiveId::ForceClose(from))
    }

    /// `ledger` paid out `asset_index` from `initial_holdings` (an `AllocationUpdated`): if it
    /// is a ledger we withdraw from with a final state we signed, the successor was credited
    /// what that final state's outcome gives it from those holdings.
    pub(crate) fn credit_successor(&mut self, ledger: ChannelId, asset_index: U256, initial: U256, block: u64) {
        let me = self.address();
        let Some(Entry { objective: Objective::Withdraw(w), done: false }) =
            self.objectives.get(&ObjectiveId::Withdraw(ledger))
        else {
            return;
        };
        let Some(outcome) = w.final_outcome_if_signed(me) else { return };
        let successor = w.successor();
        let Ok(index) = usize::try_from(asset_index) else { return };
        let Ok((after, _)) = after_transfer(outcome, index, initial, &[]) else { return };
        let (Some(before), Some(now)) = (outcome.0.get(index), after.0.get(index)) else { return };
        let asset = before.asset;
        let credit = before
            .allocations
            .iter()
            .zip(&now.allocations)
            .filter(|(a, _)| a.destination == successor)
            .fold(U256::ZERO, |sum, (a, b)| sum.saturating_add(a.amount - b.amount));
        if credit.is_zero() {
            return;
        }
        if let Some(Entry { objective: Objective::Withdraw(w), .. }) =
            self.objectives.get_mut(&ObjectiveId::Withdraw(ledger))
        {
            if !w.mark_credited(index) {
                return;
            }
        }
        self.touch(StateKey::Objective(ObjectiveId::Withdraw(ledger)));
        let held = self.chain.holdings(&successor, asset).saturating_add(credit);
        self.chain.observe_holdings(successor, asset, block, held, true);
        self.touch(StateKey::Channel(successor));
    }
}
