//! What the methods answer: the result types, serialized to the shapes `docs/api.md`
//! describes (amounts as decimal strings, addresses EIP-55, channel ids as 0x-hex).

use alloy_primitives::{Address, U256};
use nitro_core::json;
use nitro_core::party::ObjectiveId;
use nitro_core::ChannelId;
use serde::{Deserialize, Serialize};

/// Serde for amounts: written as decimal strings, read as decimal or `0x`-hex strings.
mod amount_serde {
    use super::*;
    use crate::api::schema::parse_amount;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_amount(&s).map_err(serde::de::Error::custom)
    }
}

/// Result of `ledger_open`, `ledger_close`, `virtual_fund` and `virtual_defund`: the
/// objective started, and the channel it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveStarted {
    /// The objective (`Kind-0x<channel id>`).
    pub objective_id: ObjectiveId,
    /// The channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
}

/// Our role in a ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerRole {
    /// We propose changes (participant 0).
    Leader,
    /// We countersign the leader's proposals (participant 1).
    Follower,
}

/// Where a ledger stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// Being funded (its `ledger_open` objective is not done).
    Opening,
    /// Funded; can fund virtual channels.
    Open,
    /// Being closed (its `ledger_close` objective is not done).
    Closing,
    /// Concluded and paid out.
    Closed,
}

/// Funds a ledger holds for a virtual channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuaranteeSummary {
    /// The virtual channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The amount held for it.
    #[serde(with = "amount_serde")]
    pub amount: U256,
}

/// A top-up slot pending in a ledger (ADR-0022 §4): reserved, not credited yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpSlotSummary {
    /// Whether it is ours (we deposit it) or the counterparty's.
    pub mine: bool,
    /// The amount reserved.
    #[serde(with = "amount_serde")]
    pub amount: U256,
}

/// One asset of a ledger (ADR-0022 §1): the balances, guarantees and top-up slot in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetBalanceSummary {
    /// The asset (the zero address: ETH).
    #[serde(with = "json::address")]
    pub asset: Address,
    /// Our balance of it in the consensus state (not counting guarantees).
    #[serde(with = "amount_serde")]
    pub my_balance: U256,
    /// The counterparty's balance of it.
    #[serde(with = "amount_serde")]
    pub counterparty_balance: U256,
    /// Funds of it locked for virtual channels.
    pub guarantees: Vec<GuaranteeSummary>,
    /// Its top-up slot, if one is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_up: Option<TopUpSlotSummary>,
}

/// Result of `ledger_get` (and each entry of `ledger_list`). The top-level `asset`, balances,
/// `guarantees` and `top_up` are the first asset's (the only one of a one-asset ledger, as
/// before multi-asset ledgers); `assets` lists every asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// The ledger.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The other participant.
    #[serde(with = "json::address")]
    pub counterparty: Address,
    /// Our role.
    pub role: LedgerRole,
    /// Where it stands.
    pub status: LedgerStatus,
    /// The asset (the zero address: ETH).
    #[serde(with = "json::address")]
    pub asset: Address,
    /// Our balance in the consensus state (not counting guarantees).
    #[serde(with = "amount_serde")]
    pub my_balance: U256,
    /// The counterparty's balance in the consensus state.
    #[serde(with = "amount_serde")]
    pub counterparty_balance: U256,
    /// Funds locked for virtual channels.
    pub guarantees: Vec<GuaranteeSummary>,
    /// Turn number of the consensus state.
    pub turn_num: u64,
    /// The top-up slot in the consensus state, if one is pending (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_up: Option<TopUpSlotSummary>,
    /// Every asset the ledger holds, ascending by address (ETH first).
    #[serde(default)]
    pub assets: Vec<AssetBalanceSummary>,
}

/// Our part in a virtual channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualRole {
    /// We fund it and pay.
    Payer,
    /// We are paid.
    Payee,
    /// We are a hub on its path.
    Intermediary,
}

/// Where a virtual channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualStatus {
    /// Being funded.
    Funding,
    /// Funded: payments flow.
    Open,
    /// Being closed (off chain or on chain).
    Closing,
}

/// Result of `virtual_get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualSummary {
    /// The virtual channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// Our part in it.
    pub role: VirtualRole,
    /// Where it stands.
    pub status: VirtualStatus,
    /// The payer.
    #[serde(with = "json::address")]
    pub payer: Address,
    /// The payee.
    #[serde(with = "json::address")]
    pub payee: Address,
    /// The asset (the zero address: ETH).
    #[serde(with = "json::address")]
    pub asset: Address,
    /// What the payer put in.
    #[serde(with = "amount_serde")]
    pub amount: U256,
    /// Paid so far: as payer what our vouchers promise, as payee what we hold vouchers for.
    #[serde(with = "amount_serde")]
    pub paid: U256,
}

/// Result of `ledger_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerList {
    /// Every ledger the node knows.
    pub ledgers: Vec<LedgerSummary>,
}

/// Result of `virtual_pay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSent {
    /// The virtual channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// Everything paid in the channel so far (the voucher's total).
    #[serde(with = "amount_serde")]
    pub paid: U256,
}

/// Result of `objective_get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveStatus {
    /// The objective.
    pub objective_id: ObjectiveId,
    /// The channel it is about.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// Complete.
    pub done: bool,
    /// Why it cannot go on, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// What it waits for, in words (`"done"` once done).
    pub waiting_for: String,
    /// For a channel on its way to chain: the chain time (unix seconds) at which its
    /// registered challenge finalizes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizes_at: Option<u64>,
}

/// Result of `objective_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveList {
    /// The objectives that pass the filter, by id.
    pub objectives: Vec<ObjectiveStatus>,
}

/// Result of `objectives_wait`: the ids asked about, split by where they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitResult {
    /// Complete.
    pub done: Vec<ObjectiveId>,
    /// Cannot go on.
    #[serde(default)]
    pub failed: Vec<ObjectiveId>,
    /// Still going.
    pub pending: Vec<ObjectiveId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_round_trip() {
        let id: ChannelId = ChannelId::repeat_byte(0xab);
        let objective = ObjectiveId::VirtualFund(id);
        let started = ObjectiveStarted { objective_id: objective, channel_id: id };
        let v = serde_json::to_value(&started).unwrap();
        assert_eq!(v["objective_id"], json!(format!("VirtualFund-0x{}", "ab".repeat(32))));
        assert_eq!(serde_json::from_value::<ObjectiveStarted>(v).unwrap(), started);
        let paid = PaymentSent { channel_id: id, paid: U256::from(1_000_000u64) };
        let v = serde_json::to_value(&paid).unwrap();
        assert_eq!(v["paid"], json!("1000000"));
        assert_eq!(serde_json::from_value::<PaymentSent>(v).unwrap(), paid);
    }
}
