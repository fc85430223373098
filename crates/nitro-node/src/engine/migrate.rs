//! Migrating a v1/v2 store (an input log, ADR-0015) to the state store (ADR-0020): its inputs
//! are replayed once through today's party, then the engine writes the state and drops them.
//!
//! Inputs logged by the previous release are read in their old shapes: a ledger proposal then
//! carried one `proposal` and no `previous_turn` (turns were consecutive), and is read as a
//! batch of one built on the turn before. An input that no longer applies stops the migration
//! with its position and reason — a party that diverged from what it signed before must not
//! start; finish the channels in question with the previous release first.

use nitro_core::{
    party::{PartyConfig, PartyPolicy},
    SigningKey,
};
use serde_json::Value;

use super::{input::apply, EngineError, Input};
use crate::store::Store;
use nitro_core::party::Party;

/// Replays every input of a v1/v2 store into a fresh party.
pub(super) fn replay(
    store: &Store,
    key: SigningKey,
    config: PartyConfig,
    policy: PartyPolicy,
) -> Result<(Party, usize), EngineError> {
    let mut party = Party::new(key, config).with_policy(policy);
    // A v1 log was written before virtual channels had a redemption turn.
    party.replay_legacy(store.user_version()? < 2);
    let inputs = store.inputs()?;
    for (seq, body) in &inputs {
        let value: Value = serde_json::from_str(body)
            .map_err(|e| EngineError::Load(format!("input {seq} of the input log does not decode: {e}")))?;
        let input: Input = serde_json::from_value(upgrade(value))
            .map_err(|e| EngineError::Load(format!("input {seq} of the input log does not decode: {e}")))?;
        if let Err(e) = apply(&mut party, &input) {
            return Err(EngineError::Load(format!(
                "input {seq} of the input log no longer applies ({e}); finish the channels it concerns with the \
                 previous release before upgrading"
            )));
        }
    }
    party.replay_legacy(false);
    Ok((party, inputs.len()))
}

/// Brings the outbox (messages the earlier release sent, kept for resending) to today's
/// shapes, as the inputs are.
pub(super) fn upgrade_outbox(store: &mut Store) -> Result<usize, EngineError> {
    Ok(store.rewrite_outbox(|body| {
        let value: Value = serde_json::from_str(body).ok()?;
        serde_json::to_string(&upgrade(value)).ok()
    })?)
}

/// Rewrites the previous release's shapes into today's, everywhere in an input.
fn upgrade(value: Value) -> Value {
    match value {
        Value::Object(mut map) => {
            let is_old_proposal = map.contains_key("proposal")
                && map.contains_key("turn_num")
                && map.contains_key("signature")
                && !map.contains_key("proposals");
            if is_old_proposal {
                if let Some(p) = map.remove("proposal") {
                    map.insert("proposals".into(), Value::Array(vec![p]));
                }
                if !map.contains_key("previous_turn") {
                    let previous = map
                        .get("turn_num")
                        .and_then(Value::as_str)
                        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
                        .map(|t| format!("{:#x}", t.saturating_sub(1)));
                    if let Some(previous) = previous {
                        map.insert("previous_turn".into(), Value::String(previous));
                    }
                }
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, upgrade(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(upgrade).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_proposal_becomes_a_batch_of_one_on_the_turn_before() {
        let old = serde_json::json!({"input": "message", "payload": {"ledger": {"proposal": {
            "channel_id": "0x01", "proposal": {"remove": {}}, "turn_num": "0x5", "signature": "0x00"}}}});
        let new = upgrade(old);
        let p = &new["payload"]["ledger"]["proposal"];
        assert_eq!(p["proposals"], serde_json::json!([{"remove": {}}]));
        assert_eq!(p["previous_turn"], "0x4");
        assert!(p.get("proposal").is_none());
    }
}
