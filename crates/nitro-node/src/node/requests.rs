//! The node's API requests: reads answered from the party, writes checked first (what can
//! be refused at once is refused with the reason) and then stepped in groups, long polls
//! (`objectives_wait`), and the summaries the API returns.

use std::time::Instant;

use nitro_core::{
    party::{ObjectiveId, Party, WaitingFor},
    ConsensusChannel,
};
use serde_json::{json, Value};

use super::{Node, Waiter};
use crate::{
    api::{
        ApiCall, ApiRequest, GuaranteeSummary, LedgerList, LedgerRole, LedgerStatus, LedgerSummary, ObjectiveStarted,
        ObjectiveStatus, PaymentSent, RpcError, WaitResult,
    },
    engine::{EngineError, Input, Request},
    metrics::StepKind,
};

impl Node {
    /// Handles one API call: reads and refusals are answered at once; a request for the
    /// engine is returned with its call, to be stepped ([`Node::step_requests`]).
    pub(super) fn api(&mut self, call: ApiCall) -> Option<(ApiCall, Request)> {
        let request = match call.request() {
            Ok(r) => r,
            Err(e) => {
                call.respond::<Value>(Err(e));
                return None;
            }
        };
        let me = self.me;
        let write = match request {
            ApiRequest::ObjectivesWait(w) => {
                let party = self.engine.party();
                if let Some(unknown) = w.objective_ids.iter().find(|id| party.objective(id).is_none()) {
                    call.respond::<Value>(Err(RpcError::refused(format!("unknown objective {unknown}"))));
                    return None;
                }
                let deadline = Instant::now() + w.timeout;
                self.waiters.push(Waiter { ids: w.objective_ids, any: w.any, deadline, call });
                self.answer_waiters(false);
                return None;
            }
            ApiRequest::LedgerGet { channel_id } => {
                let party = self.engine.party();
                // A ledger replaced by a withdrawal answers with its successor.
                let answer = party
                    .ledger(&party.current_ledger(channel_id))
                    .map(|l| summary(party, l))
                    .ok_or_else(|| RpcError::refused(format!("unknown ledger {channel_id}")));
                call.respond(answer);
                return None;
            }
            ApiRequest::VirtualGet { channel_id } => {
                call.respond(virtual_summary(self.engine.party(), channel_id));
                return None;
            }
            ApiRequest::LedgerList => {
                let party = self.engine.party();
                call.respond(Ok(LedgerList { ledgers: party.ledgers().map(|l| summary(party, l)).collect() }));
                return None;
            }
            ApiRequest::ObjectiveGet { objective_id } => {
                call.respond(self.status(&objective_id));
                return None;
            }
            ApiRequest::ObjectiveList(filter) => {
                call.respond(Ok(self.list(&filter)));
                return None;
            }
            ApiRequest::ObjectiveCancel { objective_id } => Request::Cancel { objective: objective_id },
            ApiRequest::ChannelForceClose { channel_id } => Request::ForceClose { channel_id },
            ApiRequest::LedgerOpen(o) => {
                if let Err(why) = self.check_ledger_open(&o) {
                    call.respond::<Value>(Err(RpcError::refused(why)));
                    return None;
                }
                let mut amounts = o.assets.iter().map(|a| (a.asset, [a.my_amount, a.counterparty_amount]));
                let Some((asset, first)) = amounts.next() else {
                    call.respond::<Value>(Err(RpcError::refused("a ledger holds at least one asset")));
                    return None;
                };
                Request::LedgerOpen {
                    participants: [me, o.counterparty],
                    asset,
                    amounts: first,
                    more_assets: amounts.collect(),
                    nonce: o.nonce.unwrap_or_else(|| self.next_nonce()),
                }
            }
            ApiRequest::LedgerClose { channel_id } => Request::LedgerClose { channel_id },
            ApiRequest::LedgerTopUp { channel_id, amount, asset } => {
                if let Err(why) = self.check_top_up(channel_id, asset, amount) {
                    call.respond::<Value>(Err(RpcError::refused(why)));
                    return None;
                }
                Request::LedgerTopUp { channel_id, amount, asset }
            }
            ApiRequest::LedgerWithdraw { channel_id, amount, asset } => {
                Request::LedgerWithdraw { channel_id, amount, asset }
            }
            ApiRequest::VirtualFund(v) => {
                if v.counterparty == me || v.intermediaries.contains(&me) {
                    call.respond::<Value>(Err(RpcError::refused(
                        "this node cannot be the payee or an intermediary of a channel it pays from",
                    )));
                    return None;
                }
                if v.intermediaries.contains(&v.counterparty) {
                    call.respond::<Value>(Err(RpcError::refused(format!(
                        "{} is an intermediary, not a payee",
                        v.counterparty
                    ))));
                    return None;
                }
                let mut participants = vec![me];
                participants.extend(v.intermediaries);
                participants.push(v.counterparty);
                Request::VirtualFund {
                    participants,
                    asset: v.asset,
                    amounts: [v.amount, v.counterparty_amount],
                    nonce: v.nonce.unwrap_or_else(|| self.next_nonce()),
                }
            }
            ApiRequest::VirtualPay { channel_id, amount } => Request::Pay { channel_id, amount },
            ApiRequest::VirtualDefund { channel_id } => Request::VirtualDefund { channel_id },
        };
        Some((call, write))
    }

    /// Steps the API's requests that arrived together as one group (one commit) and answers
    /// each: the objective it started, what is paid after a payment, or why it was refused.
    /// Returns an error only when the engine failed fatally.
    pub(super) fn step_requests(&mut self, writes: Vec<(ApiCall, Request)>) -> Result<(), EngineError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (calls, requests): (Vec<ApiCall>, Vec<Request>) = writes.into_iter().unzip();
        let pays: Vec<Option<nitro_core::ChannelId>> = requests
            .iter()
            .map(|r| match r {
                Request::Pay { channel_id, .. } => Some(*channel_id),
                _ => None,
            })
            .collect();
        let results = match self.run_group(StepKind::Request, requests.into_iter().map(Input::Request).collect()) {
            Ok(results) => results,
            Err(e) => {
                for call in calls {
                    call.respond::<Value>(Err(RpcError::internal(&e)));
                }
                return Err(e);
            }
        };
        let mut fatal = None;
        for ((call, result), pay) in calls.into_iter().zip(results).zip(pays) {
            match (result, pay) {
                (Ok(Some(objective_id)), _) => {
                    call.respond(Ok(ObjectiveStarted { objective_id, channel_id: objective_id.channel_id() }))
                }
                (Ok(None), Some(channel_id)) => {
                    call.respond(Ok(PaymentSent { channel_id, paid: self.engine.party().paid(&channel_id) }))
                }
                (Ok(None), None) => call.respond(Ok(json!({}))),
                (Err(EngineError::Party(e)), _) => call.respond::<Value>(Err(RpcError::refused(e))),
                (Err(EngineError::Declined { error, .. }), _) => call.respond::<Value>(Err(RpcError::refused(error))),
                (Err(e), _) => {
                    call.respond::<Value>(Err(RpcError::internal(&e)));
                    fatal.get_or_insert(e);
                }
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What a ledger opening needs and can be checked before anything starts: a configured
    /// peer that is not us, amounts that add up, and a wallet that holds our deposit.
    pub(super) fn check_ledger_open(&self, o: &crate::api::LedgerOpen) -> Result<(), String> {
        if o.counterparty == self.me {
            return Err("a ledger needs a counterparty other than this node".into());
        }
        if !self.peers.contains(&o.counterparty) {
            return Err(format!(
                "{} is not a configured peer (add it under [[peers]] to open a ledger with it)",
                o.counterparty
            ));
        }
        o.assets.iter().try_for_each(|a| self.check_asset_deposit(a))
    }

    /// One asset of a ledger opening: amounts that add up, an asset the policy names, and a
    /// wallet holding our deposit of it (ETH: plus gas; a token: in its smallest unit).
    fn check_asset_deposit(&self, a: &crate::api::AssetAmounts) -> Result<(), String> {
        if a.my_amount.checked_add(a.counterparty_amount).is_none() {
            return Err(format!("the two deposits overflow 256 bits (asset {})", a.asset));
        }
        let policy = self.engine.party().policy();
        if policy.assets.as_ref().is_some_and(|assets| !assets.contains(&a.asset)) {
            return Err(format!(
                "asset {} is not accepted by this node's policy (name it under [[policy.tokens]] with its limits)",
                a.asset
            ));
        }
        if a.asset.is_zero() {
            return match self.wallet {
                Some(held) if held < a.my_amount => {
                    Err(format!("the wallet holds {held} wei; the deposit needs {} wei plus gas", a.my_amount))
                }
                _ => Ok(()),
            };
        }
        match self.token_wallet.get(&a.asset) {
            Some(held) if *held < a.my_amount => Err(format!(
                "the wallet holds {held} of token {}; the deposit needs {} (in its smallest unit)",
                a.asset, a.my_amount
            )),
            _ => Ok(()),
        }
    }

    /// Fails a `ledger_top_up` fast, before anything is signed: an unknown ledger, a zero or
    /// overflowing amount, a slot pending, or an ETH wallet smaller than the deposit. The
    /// party checks the rest (its policy's limits, a top-up running) and answers with the
    /// reason too.
    pub(super) fn check_top_up(
        &self,
        channel_id: nitro_core::ChannelId,
        asset: Option<alloy_primitives::Address>,
        amount: nitro_core::U256,
    ) -> Result<(), String> {
        let party = self.engine.party();
        let channel_id = party.current_ledger(channel_id);
        let ledger = party.ledger(&channel_id).ok_or_else(|| format!("unknown ledger {channel_id}"))?;
        if amount.is_zero() {
            return Err("a top-up of zero".into());
        }
        let asset = asset.unwrap_or_else(|| ledger.consensus_outcome().asset());
        let (Some(outcome), Some(consensus)) =
            (ledger.latest_outcome().exit(asset), ledger.consensus_outcome().exit(asset))
        else {
            return Err(format!("ledger {channel_id} holds no asset {asset}"));
        };
        if outcome.slot().is_some() || consensus.slot().is_some() {
            return Err(format!("a top-up is already pending in ledger {channel_id} (asset {asset})"));
        }
        if outcome.total().and_then(|t| t.checked_add(amount)).is_none() {
            return Err("the ledger's total would overflow 256 bits".into());
        }
        match self.wallet {
            Some(held) if asset.is_zero() && held < amount => {
                Err(format!("the wallet holds {held} wei; the deposit needs {amount} wei plus gas"))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn list(&self, filter: &crate::api::ObjectiveFilter) -> crate::api::ObjectiveList {
        use crate::api::ObjectiveState;
        let party = self.engine.party();
        // The finished objectives the party let go of come from the archive (the newest
        // `ARCHIVE_LISTED` of them), then the ones it holds.
        let archived = self.engine.archived_list(filter.channel_id, ARCHIVE_LISTED).unwrap_or_default();
        let objectives = archived
            .into_iter()
            .map(|(id, a)| archived_status(id, a))
            .chain(party.objectives().filter_map(|(id, _)| self.status(&id).ok()))
            .filter(|s| filter.channel_id.is_none_or(|c| c == s.objective_id.channel_id()))
            .filter(|s| filter.kind.as_deref().is_none_or(|k| s.objective_id.to_string().starts_with(&format!("{k}-"))))
            .filter(|s| {
                let state = match (s.done, &s.failed) {
                    (true, _) => ObjectiveState::Done,
                    (false, Some(_)) => ObjectiveState::Failed,
                    (false, None) => ObjectiveState::Pending,
                };
                filter.status.is_none_or(|f| f == state)
            })
            .collect();
        crate::api::ObjectiveList { objectives }
    }

    pub(super) fn next_nonce(&mut self) -> u64 {
        // Distinct per call within a run and across restarts (time-based, strictly increasing).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64);
        self.nonce = now.unwrap_or(0).max(self.nonce + 1);
        self.nonce
    }

    pub(super) fn status(&self, id: &ObjectiveId) -> Result<ObjectiveStatus, RpcError> {
        let party = self.engine.party();
        let Some(waiting) = party.waiting_for(id) else {
            // Finished and let go of: the archive answers.
            let archived = self.engine.archived(id).map_err(|e| RpcError::internal(&e))?;
            let a = archived.ok_or_else(|| RpcError::refused(format!("unknown objective {id}")))?;
            return Ok(archived_status(*id, a));
        };
        let failed = match &waiting {
            WaitingFor::Failed(why) => Some(why.clone()),
            _ => None,
        };
        let finalizes_at = match id {
            ObjectiveId::ForceClose(c) => party.registered_challenge(c).map(|c| c.finalizes_at),
            _ => None,
        };
        Ok(ObjectiveStatus {
            objective_id: *id,
            channel_id: id.channel_id(),
            done: party.is_complete(id),
            failed,
            waiting_for: waiting.to_string(),
            finalizes_at,
        })
    }

    /// Answers the waiters whose objectives are done (or failed), and, if `expire`, those whose
    /// time is up.
    pub(super) fn answer_waiters(&mut self, expire: bool) {
        let now = Instant::now();
        let party = self.engine.party();
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            let mut result = WaitResult { done: Vec::new(), failed: Vec::new(), pending: Vec::new() };
            for id in &w.ids {
                match party.waiting_for(id) {
                    _ if party.is_complete(id) => result.done.push(*id),
                    Some(WaitingFor::Failed(_)) => result.failed.push(*id),
                    Some(_) => result.pending.push(*id),
                    None => match self.engine.archived(id) {
                        Ok(Some(a)) if a.done => result.done.push(*id),
                        Ok(Some(_)) => result.failed.push(*id),
                        _ => result.pending.push(*id),
                    },
                }
            }
            let settled = if w.any { result.pending.len() < w.ids.len() } else { result.pending.is_empty() };
            if settled || (expire && w.deadline <= now) {
                w.call.respond(Ok(result));
            } else {
                still.push(w);
            }
        }
        self.waiters = still;
    }
}

/// A virtual channel the party funds, is paid in, or routes (while it holds its funding).
fn virtual_summary(party: &Party, channel_id: nitro_core::ChannelId) -> Result<crate::api::VirtualSummary, RpcError> {
    use crate::api::{VirtualRole, VirtualStatus, VirtualSummary};
    use nitro_core::party::Objective;
    let Some(Objective::VirtualFund(v)) = party.objective(&ObjectiveId::VirtualFund(channel_id)) else {
        return Err(RpcError::refused(format!("unknown virtual channel {channel_id}")));
    };
    let channel = v.channel();
    let participants = &channel.prefund.participants;
    let (payer, payee) = match (participants.first(), participants.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Err(RpcError::refused(format!("virtual channel {channel_id} has no participants"))),
    };
    let me = party.address();
    let role = if me == payer {
        VirtualRole::Payer
    } else if me == payee {
        VirtualRole::Payee
    } else {
        VirtualRole::Intermediary
    };
    let closing = [ObjectiveId::VirtualDefund(channel_id), ObjectiveId::ForceClose(channel_id)]
        .iter()
        .any(|id| party.objective(id).is_some());
    let status = match (party.is_complete(&ObjectiveId::VirtualFund(channel_id)), closing) {
        (_, true) => VirtualStatus::Closing,
        (true, false) => VirtualStatus::Open,
        (false, false) => VirtualStatus::Funding,
    };
    Ok(VirtualSummary {
        channel_id,
        role,
        status,
        payer,
        payee,
        asset: channel.asset,
        amount: channel.amounts[0],
        paid: party.paid(&channel_id),
    })
}

/// How many archived objectives `objective_list` includes at most.
const ARCHIVE_LISTED: usize = 1_000;

/// The status of an objective known only from the archive.
fn archived_status(id: ObjectiveId, a: crate::engine::Archived) -> ObjectiveStatus {
    ObjectiveStatus {
        objective_id: id,
        channel_id: id.channel_id(),
        done: a.done,
        failed: (!a.done).then(|| a.detail.clone()),
        waiting_for: if a.done { "done".into() } else { format!("failed: {}", a.detail) },
        finalizes_at: None,
    }
}

fn summary(party: &Party, l: &ConsensusChannel) -> LedgerSummary {
    let o = l.consensus_outcome();
    let state = l.consensus_state();
    let me = party.address();
    let counterparty = state.state().participants.iter().find(|p| **p != me).copied().unwrap_or_default();
    let assets: Vec<_> = o.assets().iter().map(|a| asset_summary(l, a)).collect();
    let zero = nitro_core::U256::ZERO;
    let (mine, theirs) = assets.first().map_or((zero, zero), |a| (a.my_balance, a.counterparty_balance));
    let closing = party.objective(&ObjectiveId::DirectDefund(l.channel_id())).is_some();
    LedgerSummary {
        channel_id: l.channel_id(),
        counterparty,
        role: match l {
            ConsensusChannel::Leader(_) => LedgerRole::Leader,
            ConsensusChannel::Follower(_) => LedgerRole::Follower,
        },
        status: if closing { LedgerStatus::Closing } else { LedgerStatus::Open },
        asset: o.asset(),
        my_balance: mine,
        counterparty_balance: theirs,
        guarantees: assets.first().map(|a| a.guarantees.clone()).unwrap_or_default(),
        turn_num: l.consensus_turn().to::<u64>(),
        top_up: assets.first().and_then(|a| a.top_up.clone()),
        assets,
    }
}

/// One asset of a ledger, from our side.
fn asset_summary(l: &ConsensusChannel, a: &nitro_core::AssetOutcome) -> crate::api::AssetBalanceSummary {
    let leader = matches!(l, ConsensusChannel::Leader(_));
    let (mine, theirs) = if leader { (a.leader(), a.follower()) } else { (a.follower(), a.leader()) };
    crate::api::AssetBalanceSummary {
        asset: a.asset(),
        my_balance: mine.amount,
        counterparty_balance: theirs.amount,
        guarantees: a.guarantees().map(|g| GuaranteeSummary { channel_id: g.target(), amount: g.amount() }).collect(),
        top_up: a.slot().map(|s| crate::api::TopUpSlotSummary {
            mine: (s.side == nitro_core::Side::Leader) == leader,
            amount: s.amount,
        }),
    }
}
