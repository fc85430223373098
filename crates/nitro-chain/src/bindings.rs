//! The `NitroAdjudicator` functions and events this crate uses, declared inline (so building
//! needs no artifact), the calldata of each [`ChainTransaction`], and the decoding of the
//! adjudicator's logs into [`ChainEvent`]s.
//!
//! `sol!` cannot refer to struct types declared in another crate, so the interface below
//! repeats the `INitroTypes` / `ExitFormat` structs to compute selectors and topics; calldata
//! is encoded with `nitro_core::abi`'s types (the ones states are hashed with), behind the
//! selectors declared here. Tests check that both agree, and that every selector and topic
//! declared here exists in the npm artifact's ABI ([`verify_against_abi`]).

use alloy::json_abi::JsonAbi;
use alloy_primitives::{aliases::U48, B256, U256};
use alloy_sol_types::{SolCall, SolEventInterface, SolValue};
use nitro_core::{
    abi,
    chain::{ChainEvent, ChainTransaction, SubmittedState},
    AllocationType, AssetMetadata, Exit, Signature, SingleAssetExit, VariablePart,
};

#[allow(missing_docs)]
mod declared {
    alloy::sol! {
        /// The part of the `NitroAdjudicator` (2.0.1-alpha.6) interface this crate uses.
        #[sol(all_derives)]
        interface INitroAdjudicator {
            struct AssetMetadata { uint8 assetType; bytes metadata; }
            struct Allocation { bytes32 destination; uint256 amount; uint8 allocationType; bytes metadata; }
            struct SingleAssetExit { address asset; AssetMetadata assetMetadata; Allocation[] allocations; }
            struct FixedPart { address[] participants; uint64 channelNonce; address appDefinition; uint48 challengeDuration; }
            struct VariablePart { SingleAssetExit[] outcome; bytes appData; uint48 turnNum; bool isFinal; }
            struct Signature { uint8 v; bytes32 r; bytes32 s; }
            struct SignedVariablePart { VariablePart variablePart; Signature[] sigs; }
            struct ReclaimArgs {
                bytes32 sourceChannelId;
                bytes32 sourceStateHash;
                bytes sourceOutcomeBytes;
                uint256 sourceAssetIndex;
                uint256 indexOfTargetInSource;
                bytes32 targetStateHash;
                bytes targetOutcomeBytes;
                uint256 targetAssetIndex;
            }

            function deposit(address asset, bytes32 channelId, uint256 expectedHeld, uint256 amount) external payable;
            function checkpoint(FixedPart fixedPart, SignedVariablePart[] proof, SignedVariablePart candidate) external;
            function challenge(
                FixedPart fixedPart,
                SignedVariablePart[] proof,
                SignedVariablePart candidate,
                Signature challengerSig
            ) external;
            function conclude(FixedPart fixedPart, SignedVariablePart candidate) external;
            function concludeAndTransferAllAssets(FixedPart fixedPart, SignedVariablePart candidate) external;
            function transfer(
                uint256 assetIndex,
                bytes32 fromChannelId,
                bytes outcomeBytes,
                bytes32 stateHash,
                uint256[] indices
            ) external;
            function reclaim(ReclaimArgs reclaimArgs) external;
            function holdings(address asset, bytes32 channelId) external view returns (uint256);
            function statusOf(bytes32 channelId) external view returns (bytes32);
            function unpackStatus(bytes32 channelId)
                external view returns (uint48 turnNumRecord, uint48 finalizesAt, uint160 fingerprint);
            function stateIsSupported(FixedPart fixedPart, SignedVariablePart[] proof, SignedVariablePart candidate)
                external view returns (bool supported, string reason);

            event Deposited(bytes32 indexed destination, address asset, uint256 destinationHoldings);
            event AllocationUpdated(bytes32 indexed channelId, uint256 assetIndex, uint256 initialHoldings, uint256 finalHoldings);
            event Concluded(bytes32 indexed channelId, uint48 finalizesAt);
            event ChallengeRegistered(
                bytes32 indexed channelId,
                uint48 finalizesAt,
                SignedVariablePart[] proof,
                SignedVariablePart candidate
            );
            event ChallengeCleared(bytes32 indexed channelId, uint48 newTurnNumRecord);
            event Checkpointed(bytes32 indexed channelId, uint48 newTurnNumRecord);
            event Reclaimed(bytes32 indexed channelId, uint256 assetIndex);
        }

        /// The ERC-20 functions the chain shell calls: `approve` before a token deposit (the
        /// adjudicator pulls the tokens with `transferFrom`), and reads to check a token
        /// before trusting it with a deposit.
        #[sol(all_derives)]
        interface IERC20 {
            function approve(address spender, uint256 amount) external returns (bool);
            function allowance(address owner, address spender) external view returns (uint256);
            function balanceOf(address account) external view returns (uint256);
            function transfer(address to, uint256 amount) external returns (bool);
            function transferFrom(address from, address to, uint256 amount) external returns (bool);
            function totalSupply() external view returns (uint256);
            function decimals() external view returns (uint8);
        }
    }
}

pub use declared::{INitroAdjudicator, IERC20};
use INitroAdjudicator::{INitroAdjudicatorCalls as Calls, INitroAdjudicatorEvents as Events};

/// `selector ‖ abi.encode(params...)`.
fn with_selector<T>(selector: [u8; 4], params: T) -> Vec<u8>
where
    T: SolValue,
    for<'a> <T::SolType as alloy_sol_types::SolType>::Token<'a>: alloy_sol_types::abi::TokenSeq<'a>,
{
    let encoded = params.abi_encode_params();
    let mut out = Vec::with_capacity(4 + encoded.len());
    out.extend_from_slice(&selector);
    out.extend_from_slice(&encoded);
    out
}

fn index(i: usize) -> U256 {
    U256::from(i)
}

/// The contract `tx` calls: the token for an [`ChainTransaction::Approve`], the adjudicator
/// for everything else.
pub fn target(tx: &ChainTransaction, adjudicator: alloy_primitives::Address) -> alloy_primitives::Address {
    match tx {
        ChainTransaction::Approve { token, .. } => *token,
        _ => adjudicator,
    }
}

/// The calldata of `tx` (which should have passed [`ChainTransaction::validate`]).
pub fn calldata(tx: &ChainTransaction) -> Vec<u8> {
    use INitroAdjudicator as I;
    match tx {
        ChainTransaction::Deposit { channel_id, asset, expected_held, amount } => {
            I::depositCall { asset: *asset, channelId: *channel_id, expectedHeld: *expected_held, amount: *amount }
                .abi_encode()
        }
        ChainTransaction::Approve { spender, amount, .. } => {
            IERC20::approveCall { spender: *spender, amount: *amount }.abi_encode()
        }
        ChainTransaction::Checkpoint { state } => abi::checkpoint_calldata(state),
        ChainTransaction::Challenge { proof, state, challenger_signature } => with_selector(
            I::challengeCall::SELECTOR,
            (
                abi::FixedPart::from(&state.state().fixed_part()),
                proof.iter().map(abi::SignedVariablePart::from).collect::<Vec<_>>(),
                abi::SignedVariablePart::from(state),
                abi::Signature::from(challenger_signature),
            ),
        ),
        ChainTransaction::Conclude { state } => with_selector(
            I::concludeCall::SELECTOR,
            (abi::FixedPart::from(&state.state().fixed_part()), abi::SignedVariablePart::from(state)),
        ),
        ChainTransaction::ConcludeAndTransferAllAssets { state } => with_selector(
            I::concludeAndTransferAllAssetsCall::SELECTOR,
            (abi::FixedPart::from(&state.state().fixed_part()), abi::SignedVariablePart::from(state)),
        ),
        ChainTransaction::Transfer { channel_id, asset_index, outcome, state_hash, indices } => I::transferCall {
            assetIndex: index(*asset_index),
            fromChannelId: *channel_id,
            outcomeBytes: outcome.encode().into(),
            stateHash: *state_hash,
            indices: indices.iter().copied().map(index).collect(),
        }
        .abi_encode(),
        ChainTransaction::Reclaim {
            source_channel_id,
            source_state_hash,
            source_outcome,
            source_asset_index,
            index_of_target_in_source,
            target_state_hash,
            target_outcome,
            target_asset_index,
        } => I::reclaimCall {
            reclaimArgs: I::ReclaimArgs {
                sourceChannelId: *source_channel_id,
                sourceStateHash: *source_state_hash,
                sourceOutcomeBytes: source_outcome.encode().into(),
                sourceAssetIndex: index(*source_asset_index),
                indexOfTargetInSource: index(*index_of_target_in_source),
                targetStateHash: *target_state_hash,
                targetOutcomeBytes: target_outcome.encode().into(),
                targetAssetIndex: index(*target_asset_index),
            },
        }
        .abi_encode(),
    }
}

/// Calldata of `stateIsSupported(fixedPart, [], candidate)` for `state`.
pub fn state_is_supported_calldata(state: &nitro_core::SignedState) -> Vec<u8> {
    with_selector(
        INitroAdjudicator::stateIsSupportedCall::SELECTOR,
        (
            abi::FixedPart::from(&state.state().fixed_part()),
            Vec::<abi::SignedVariablePart>::new(),
            abi::SignedVariablePart::from(state),
        ),
    )
}

/// The topic0 of every adjudicator event decoded into [`ChainEvent`]s.
pub fn event_topics() -> Vec<B256> {
    Events::SELECTORS.iter().map(|s| B256::from(*s)).collect()
}

/// Why a declared selector or topic is not in an artifact's ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiMismatch {
    /// A declared function selector is not in the ABI.
    #[error("function selector 0x{0} declared here is not in the artifact ABI")]
    Function(String),
    /// A declared event topic is not in the ABI.
    #[error("event topic {0} declared here is not in the artifact ABI")]
    Event(B256),
}

/// Checks that every function selector and event topic declared in [`INitroAdjudicator`]
/// exists in `abi` (the artifact's JSON ABI).
pub fn verify_against_abi(abi: &JsonAbi) -> Result<(), AbiMismatch> {
    let selectors: Vec<[u8; 4]> = abi.functions().map(|f| f.selector().0).collect();
    for selector in Calls::SELECTORS {
        if !selectors.contains(selector) {
            return Err(AbiMismatch::Function(alloy_primitives::hex::encode(selector)));
        }
    }
    let topics: Vec<B256> = abi.events().map(|e| e.selector()).collect();
    for topic in Events::SELECTORS {
        let topic = B256::from(*topic);
        if !topics.contains(&topic) {
            return Err(AbiMismatch::Event(topic));
        }
    }
    Ok(())
}

fn u48(v: U48) -> u64 {
    v.to::<u64>()
}

/// A signature as the adjudicator accepted it. `ecrecover` takes high `s`, so it is brought to
/// its canonical low-`s` twin (same signer); one that is not even that (impossible for a state
/// the contract accepted) is left out rather than failing the whole event — a challenge must
/// never go unanswered because its log did not decode.
fn signature(s: &INitroAdjudicator::Signature) -> Option<Signature> {
    Signature::normalized(s.r, s.s, s.v).ok()
}

fn variable_part(v: &INitroAdjudicator::VariablePart) -> VariablePart {
    VariablePart {
        outcome: Exit(
            v.outcome
                .iter()
                .map(|e| SingleAssetExit {
                    asset: e.asset,
                    asset_metadata: AssetMetadata {
                        asset_type: e.assetMetadata.assetType,
                        metadata: e.assetMetadata.metadata.clone(),
                    },
                    allocations: e
                        .allocations
                        .iter()
                        .map(|a| nitro_core::Allocation {
                            destination: a.destination,
                            amount: a.amount,
                            allocation_type: AllocationType(a.allocationType),
                            metadata: a.metadata.clone(),
                        })
                        .collect(),
                })
                .collect(),
        ),
        app_data: v.appData.clone(),
        turn_num: v.turnNum,
        is_final: v.isFinal,
    }
}

fn submitted(s: &INitroAdjudicator::SignedVariablePart) -> SubmittedState {
    SubmittedState {
        variable_part: variable_part(&s.variablePart),
        signatures: s.sigs.iter().filter_map(signature).collect(),
    }
}

/// Decodes one adjudicator log (topics and data) found in block `block_number`.
///
/// `Ok(None)` for an event of the adjudicator this crate does not track; `Err` for a log with a
/// tracked topic that does not decode.
pub fn decode_log(
    topics: &[B256],
    data: &[u8],
    block_number: u64,
) -> Result<Option<ChainEvent>, alloy_sol_types::Error> {
    if topics.first().is_none_or(|t| !Events::SELECTORS.contains(&t.0)) {
        return Ok(None);
    }
    let event = Events::decode_raw_log(topics, data)?;
    Ok(Some(match event {
        Events::Deposited(e) => ChainEvent::Deposited {
            channel_id: e.destination,
            block_number,
            asset: e.asset,
            now_held: e.destinationHoldings,
        },
        Events::AllocationUpdated(e) => ChainEvent::AllocationUpdated {
            channel_id: e.channelId,
            block_number,
            asset_index: e.assetIndex,
            initial_holdings: e.initialHoldings,
            final_holdings: e.finalHoldings,
        },
        Events::Concluded(e) => {
            ChainEvent::Concluded { channel_id: e.channelId, block_number, finalizes_at: u48(e.finalizesAt) }
        }
        Events::ChallengeRegistered(e) => ChainEvent::ChallengeRegistered {
            channel_id: e.channelId,
            block_number,
            finalizes_at: u48(e.finalizesAt),
            proof: e.proof.iter().map(submitted).collect(),
            candidate: submitted(&e.candidate),
        },
        Events::ChallengeCleared(e) => ChainEvent::ChallengeCleared {
            channel_id: e.channelId,
            block_number,
            new_turn_num_record: e.newTurnNumRecord,
        },
        Events::Checkpointed(e) => {
            ChainEvent::Checkpointed { channel_id: e.channelId, block_number, new_turn_num_record: e.newTurnNumRecord }
        }
        Events::Reclaimed(e) => {
            ChainEvent::Reclaimed { channel_id: e.channelId, block_number, asset_index: e.assetIndex }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, Bytes};
    use alloy_sol_types::{SolEvent, SolInterface};
    use nitro_core::{destination_of, Allocation, SignedState, SigningKey, State};

    fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b).unwrap()
    }

    fn signed_state(turn: u64) -> SignedState {
        let (a, b) = (key(1), key(2));
        let state = State {
            participants: vec![a.address(), b.address()],
            channel_nonce: 1,
            app_definition: Address::repeat_byte(9),
            challenge_duration: U48::from(10),
            outcome: Exit(vec![SingleAssetExit {
                asset: Address::ZERO,
                asset_metadata: AssetMetadata::default(),
                allocations: vec![
                    Allocation::simple(destination_of(a.address()), U256::from(1)),
                    Allocation::simple(destination_of(b.address()), U256::from(2)),
                ],
            }]),
            app_data: Bytes::new(),
            turn_num: U48::from(turn),
            is_final: true,
        };
        let mut s = SignedState::new(state);
        s.sign(&a).unwrap();
        s.sign(&b).unwrap();
        s
    }

    #[test]
    fn core_encoded_calldata_decodes_with_the_declared_interface() {
        let state = signed_state(5);
        let data = calldata(&ChainTransaction::Checkpoint { state: state.clone() });
        let call = INitroAdjudicator::checkpointCall::abi_decode(&data).unwrap();
        assert_eq!(call.candidate.variablePart.turnNum, U48::from(5));
        assert_eq!(call.abi_encode(), data);

        let tx = ChainTransaction::challenge(state.clone(), &key(1)).unwrap();
        let data = calldata(&tx);
        let call = INitroAdjudicator::challengeCall::abi_decode(&data).unwrap();
        assert_eq!(call.candidate.sigs.len(), 2);
        assert_eq!(call.abi_encode(), data);

        for tx in [
            ChainTransaction::Conclude { state: state.clone() },
            ChainTransaction::ConcludeAndTransferAllAssets { state: state.clone() },
        ] {
            let data = calldata(&tx);
            let decoded = Calls::abi_decode(&data).unwrap();
            assert_eq!(decoded.abi_encode(), data);
        }
        let data = state_is_supported_calldata(&state);
        assert!(INitroAdjudicator::stateIsSupportedCall::abi_decode(&data).is_ok());
    }

    #[test]
    fn challenge_registered_logs_decode_into_core_states() {
        let state = signed_state(7);
        let candidate: abi::SignedVariablePart = (&state).into();
        // Encode the event data with the core types, decode with the declared event.
        let data = (U48::from(1234), Vec::<abi::SignedVariablePart>::new(), candidate).abi_encode_params();
        let topics = [INitroAdjudicator::ChallengeRegistered::SIGNATURE_HASH, state.channel_id()];
        let event = decode_log(&topics, &data, 42).unwrap().unwrap();
        let ChainEvent::ChallengeRegistered { channel_id, block_number, finalizes_at, proof, candidate } = event else {
            panic!("wrong event {event:?}");
        };
        assert_eq!((channel_id, block_number, finalizes_at, proof.len()), (state.channel_id(), 42, 1234, 0));
        assert_eq!(candidate.signed_state(&state.state().fixed_part()).unwrap(), state);
    }

    #[test]
    fn unknown_topics_are_ignored_and_bad_data_is_an_error() {
        assert_eq!(decode_log(&[B256::repeat_byte(1)], &[], 1), Ok(None));
        assert_eq!(decode_log(&[], &[], 1), Ok(None));
        let topics = [INitroAdjudicator::Deposited::SIGNATURE_HASH, B256::repeat_byte(1)];
        assert!(decode_log(&topics, &[1, 2, 3], 1).is_err());
    }
}
