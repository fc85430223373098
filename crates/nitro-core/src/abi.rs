//! The `NitroAdjudicator` ABI types (`INitroTypes`, `exit-format`) and the conversions from
//! this crate's types, for encoding states and building contract calls.
//!
//! Declared here, from the contract's Solidity interface, so that encoding needs no
//! artifact at build time; the chain crate checks them against the deployed bytecode.
#![allow(missing_docs)]

use crate::state;

alloy_sol_types::sol! {
    /// `ExitFormat.AssetMetadata`.
    #[derive(Debug, PartialEq, Eq)]
    struct AssetMetadata { uint8 assetType; bytes metadata; }
    /// `ExitFormat.Allocation`.
    #[derive(Debug, PartialEq, Eq)]
    struct Allocation { bytes32 destination; uint256 amount; uint8 allocationType; bytes metadata; }
    /// `ExitFormat.SingleAssetExit`.
    #[derive(Debug, PartialEq, Eq)]
    struct SingleAssetExit { address asset; AssetMetadata assetMetadata; Allocation[] allocations; }
    /// `INitroTypes.FixedPart`.
    #[derive(Debug, PartialEq, Eq)]
    struct FixedPart { address[] participants; uint64 channelNonce; address appDefinition; uint48 challengeDuration; }
    /// `INitroTypes.VariablePart`.
    #[derive(Debug, PartialEq, Eq)]
    struct VariablePart { SingleAssetExit[] outcome; bytes appData; uint48 turnNum; bool isFinal; }
    /// `INitroTypes.Signature`.
    #[derive(Debug, PartialEq, Eq)]
    struct Signature { uint8 v; bytes32 r; bytes32 s; }
    /// `INitroTypes.SignedVariablePart`.
    #[derive(Debug, PartialEq, Eq)]
    struct SignedVariablePart { VariablePart variablePart; Signature[] sigs; }

    /// `VirtualPaymentApp` app data: a voucher's amount and the payer's signature on it.
    #[derive(Debug, PartialEq, Eq)]
    struct VoucherAmountAndSignature { uint256 amount; Signature signature; }

    /// `ForceMove.checkpoint`: register a supported state without a challenge.
    function checkpoint(FixedPart fixedPart, SignedVariablePart[] proof, SignedVariablePart candidate) external;
}

impl From<&state::FixedPart> for FixedPart {
    fn from(f: &state::FixedPart) -> Self {
        Self {
            participants: f.participants.clone(),
            channelNonce: f.channel_nonce,
            appDefinition: f.app_definition,
            challengeDuration: f.challenge_duration,
        }
    }
}

impl From<&state::State> for VariablePart {
    fn from(s: &state::State) -> Self {
        Self { outcome: s.outcome.to_abi(), appData: s.app_data.clone(), turnNum: s.turn_num, isFinal: s.is_final }
    }
}

impl From<&state::Signature> for Signature {
    fn from(s: &state::Signature) -> Self {
        Self { v: s.v(), r: s.r(), s: s.s() }
    }
}

impl From<&state::SignedState> for SignedVariablePart {
    /// The signatures held, in participant order (what the adjudicator expects for
    /// unanimous-consensus apps, whose `signedBy` mask is derived from the order).
    fn from(s: &state::SignedState) -> Self {
        Self { variablePart: s.state().into(), sigs: s.signatures().iter().flatten().map(Signature::from).collect() }
    }
}

/// Calldata of `checkpoint(fixedPart, [], candidate)` for a fully signed state.
pub fn checkpoint_calldata(candidate: &state::SignedState) -> Vec<u8> {
    use alloy_sol_types::SolCall;
    checkpointCall {
        fixedPart: (&candidate.state().fixed_part()).into(),
        proof: Vec::new(),
        candidate: candidate.into(),
    }
    .abi_encode()
}
