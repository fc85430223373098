//! The exit-format outcome of a channel: what each destination receives, per asset.

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::abi;
use crate::json;

/// The 32-byte destination of an allocation: a channel id or a left-padded address.
pub type Destination = B256;

/// Turns an external address into the destination that pays it.
pub fn destination_of(address: Address) -> Destination {
    address.into_word()
}

/// Reads back an external address from a destination, if its top 12 bytes are zero.
pub fn address_of(destination: &Destination) -> Option<Address> {
    destination[..12].iter().all(|b| *b == 0).then(|| Address::from_word(*destination))
}

/// How the adjudicator pays out an allocation (`exit-format` 0.2.0 numbering).
///
/// Hashing treats the type as an opaque `uint8`; the named values are those the deployed
/// `NitroAdjudicator` gives meaning to. go-nitro wrote guarantees with type 1, which the
/// contract pays out like a plain allocation; this crate writes [`AllocationType::GUARANTEE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllocationType(#[serde(with = "json::uint8")] pub u8);

impl AllocationType {
    /// A plain transfer to the destination.
    pub const SIMPLE: Self = Self(0);
    /// Paid out through a withdraw helper contract.
    pub const WITHDRAW_HELPER: Self = Self(1);
    /// A guarantee: funds held for a target channel, redeemable with `reclaim`.
    pub const GUARANTEE: Self = Self(2);
}

/// Asset-type information of one single-asset exit (0 = native/ERC-20).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetMetadata {
    /// `exit-format` asset type: 0 default, 1 ERC-721, 2 ERC-1155, 3 qualified.
    #[serde(with = "json::uint8")]
    pub asset_type: u8,
    /// Type-specific metadata (token id, chain id and asset holder, ...).
    #[serde(with = "json::bytes")]
    pub metadata: Bytes,
}

/// One payout of one asset: `amount` to `destination`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allocation {
    /// Who receives the funds: a channel id or a left-padded address.
    #[serde(with = "json::bytes32")]
    pub destination: Destination,
    /// How much, in the asset's smallest unit.
    #[serde(with = "json::uint256")]
    pub amount: U256,
    /// How the adjudicator pays it out.
    pub allocation_type: AllocationType,
    /// Type-specific data; for a guarantee the [`GuaranteeMetadata`].
    #[serde(with = "json::bytes")]
    pub metadata: Bytes,
}

impl Allocation {
    /// A plain allocation paying `amount` to `destination`.
    pub fn simple(destination: Destination, amount: U256) -> Self {
        Self { destination, amount, allocation_type: AllocationType::SIMPLE, metadata: Bytes::new() }
    }
}

/// The outcome for one asset: its allocations in priority order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SingleAssetExit {
    /// The asset: the zero address for ETH, otherwise an ERC-20/721/1155 contract.
    #[serde(with = "json::address")]
    pub asset: Address,
    /// Asset-type information.
    pub asset_metadata: AssetMetadata,
    /// Who gets what, in payout priority order.
    pub allocations: Vec<Allocation>,
}

/// A channel's outcome: one [`SingleAssetExit`] per asset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Exit(pub Vec<SingleAssetExit>);

impl Exit {
    /// `abi.encode(SingleAssetExit[])`, the bytes the adjudicator hashes as the outcome.
    pub fn encode(&self) -> Vec<u8> {
        self.to_abi().abi_encode()
    }

    /// keccak256 of [`Exit::encode`].
    pub fn hash(&self) -> B256 {
        keccak256(self.encode())
    }

    /// Total held per asset, in exit order.
    pub fn totals(&self) -> Vec<Option<U256>> {
        self.0.iter().map(|e| e.allocations.iter().try_fold(U256::ZERO, |acc, a| acc.checked_add(a.amount))).collect()
    }

    pub(crate) fn to_abi(&self) -> Vec<abi::SingleAssetExit> {
        self.0
            .iter()
            .map(|e| abi::SingleAssetExit {
                asset: e.asset,
                assetMetadata: abi::AssetMetadata {
                    assetType: e.asset_metadata.asset_type,
                    metadata: e.asset_metadata.metadata.clone(),
                },
                allocations: e
                    .allocations
                    .iter()
                    .map(|a| abi::Allocation {
                        destination: a.destination,
                        amount: a.amount,
                        allocationType: a.allocation_type.0,
                        metadata: a.metadata.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Metadata of a guarantee allocation: the two parties whose funds it holds.
///
/// `abi.encode(tuple(bytes32 left, bytes32 right))`, which is simply `left ‖ right`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuaranteeMetadata {
    /// The party on the left of the target channel's path (pays `left_deposit`).
    #[serde(with = "json::bytes32")]
    pub left: Destination,
    /// The party on the right.
    #[serde(with = "json::bytes32")]
    pub right: Destination,
}

impl GuaranteeMetadata {
    /// The 64-byte encoding `left ‖ right`.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(self.left.as_slice());
        out.extend_from_slice(self.right.as_slice());
        Bytes::from(out)
    }

    /// Parses the 64-byte encoding; any other length is refused.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 64)
            .then(|| Self { left: B256::from_slice(&bytes[..32]), right: B256::from_slice(&bytes[32..]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantee_metadata_round_trips_and_refuses_other_lengths() {
        let m = GuaranteeMetadata { left: B256::repeat_byte(1), right: B256::repeat_byte(2) };
        assert_eq!(GuaranteeMetadata::decode(&m.encode()), Some(m));
        assert_eq!(GuaranteeMetadata::decode(&[0u8; 63]), None);
        assert_eq!(GuaranteeMetadata::decode(&[0u8; 65]), None);
    }

    #[test]
    fn destinations_map_back_to_addresses_only_when_padded() {
        let a = Address::repeat_byte(7);
        assert_eq!(address_of(&destination_of(a)), Some(a));
        assert_eq!(address_of(&B256::repeat_byte(1)), None);
    }

    #[test]
    fn totals_detect_overflow() {
        let exit = Exit(vec![SingleAssetExit {
            asset: Address::ZERO,
            asset_metadata: AssetMetadata::default(),
            allocations: vec![Allocation::simple(B256::ZERO, U256::MAX), Allocation::simple(B256::ZERO, U256::from(1))],
        }]);
        assert_eq!(exit.totals(), vec![None]);
    }
}
