//! Deposits of ERC-20 tokens: the allowance the adjudicator needs, and the check that a token
//! behaves before any of ours goes into it.
//!
//! The deployed `NitroAdjudicator` pulls a deposit with OpenZeppelin's `safeTransferFrom` and
//! credits the channel with the amount asked for, and pays out with a plain
//! `IERC20(asset).transfer` whose return value it ignores. Two kinds of token therefore lose
//! money without any revert:
//! - a token that takes a **fee on transfer** delivers less than the adjudicator credits, so
//!   the last channels paid out of it find the adjudicator short;
//! - a token whose **`transfer` returns `false`** instead of reverting makes every payout a
//!   silent no-op: the holdings go down, nobody receives anything.
//!
//! Before a token deposit is sent, [`EthChainService::check_token`] runs the deposit and a
//! payout on the node without sending anything (`eth_simulateV1`, one call): approve, deposit,
//! the adjudicator's token balance before and after (it must grow by exactly the amount), then
//! a transfer of the amount from the adjudicator back to us (it must return `true` and deliver
//! exactly the amount). A token failing either is refused with [`ChainError::UnsafeToken`]; a
//! node that cannot simulate is refused too (nothing would prove the token safe).

use alloy::providers::Provider;
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use nitro_core::chain::ChainTransaction;
use serde_json::{json, Value};

use crate::{
    bindings::{self, IERC20},
    ChainError, EthChainService,
};

/// The JSON-RPC method of the check.
const SIMULATE: &str = "eth_simulateV1";

impl EthChainService {
    /// What the adjudicator may pull of our `token` (`allowance(us, adjudicator)`).
    pub async fn allowance(&self, token: Address) -> Result<U256, ChainError> {
        let input = IERC20::allowanceCall { owner: self.client().address(), spender: self.adjudicator() }.abi_encode();
        let output = self.client().call("allowance", token, Bytes::from(input)).await?;
        IERC20::allowanceCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "allowance", message: e.to_string() })
    }

    /// `balanceOf(account)` of `token`.
    pub async fn token_balance(&self, token: Address, account: Address) -> Result<U256, ChainError> {
        let input = IERC20::balanceOfCall { account }.abi_encode();
        let output = self.client().call("balanceOf", token, Bytes::from(input)).await?;
        IERC20::balanceOfCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "balanceOf", message: e.to_string() })
    }

    /// The approval a token deposit needs first, if the allowance is short of its amount
    /// (`None` for ETH, for every other transaction, and when the allowance suffices).
    pub async fn approval_needed(&self, tx: &ChainTransaction) -> Result<Option<ChainTransaction>, ChainError> {
        let Some((token, amount)) = tx.token_deposit() else { return Ok(None) };
        if self.allowance(token).await? >= amount {
            return Ok(None);
        }
        Ok(Some(ChainTransaction::Approve { channel_id: tx.channel_id(), token, spender: self.adjudicator(), amount }))
    }

    /// Checks, without sending anything, that the token deposit `tx` credits the adjudicator
    /// with exactly its amount and that a payout of it from the adjudicator returns `true` and
    /// delivers exactly the amount (see the module documentation). `Ok` for anything but a
    /// token deposit.
    pub async fn check_token(&self, tx: &ChainTransaction) -> Result<(), ChainError> {
        let Some((token, amount)) = tx.token_deposit() else { return Ok(()) };
        let (us, adjudicator) = (self.client().address(), self.adjudicator());
        let refuse = |reason: String| ChainError::UnsafeToken { token, reason };
        let call = |from: Address, to: Address, input: Vec<u8>| json!({ "from": from, "to": to, "input": Bytes::from(input), "value": "0x0" });
        let balance_of = |account| IERC20::balanceOfCall { account }.abi_encode();
        let calls = vec![
            call(us, token, balance_of(adjudicator)),
            call(us, token, IERC20::approveCall { spender: adjudicator, amount }.abi_encode()),
            call(us, adjudicator, bindings::calldata(tx)),
            call(us, token, balance_of(adjudicator)),
            call(us, token, balance_of(us)),
            call(adjudicator, token, IERC20::transferCall { to: us, amount }.abi_encode()),
            call(us, token, balance_of(us)),
        ];
        let params = json!([{ "blockStateCalls": [{ "calls": calls }], "validation": false }, "latest"]);
        let answer =
            self.client().provider().raw_request::<Value, Value>(SIMULATE.into(), params).await.map_err(|e| {
                match ChainError::from_rpc(SIMULATE, "deposit", e) {
                    e @ ChainError::Unreachable { .. } => e,
                    other => refuse(format!(
                        "the node cannot simulate the deposit ({SIMULATE}: {other}), so the token cannot be checked"
                    )),
                }
            })?;
        let results = SimulatedCalls::parse(&answer).map_err(|why| refuse(format!("{SIMULATE} answered {why}")))?;
        let word = |i: usize, what: &str| results.word(i).map_err(|why| refuse(format!("{what}: {why}")));
        let held_before = word(0, "balanceOf(adjudicator)")?;
        if word(1, "approve")?.is_zero() {
            return Err(refuse("approve returns false".into()));
        }
        if let Err(why) = results.succeeded(2) {
            // Not the token's fault as far as we know (a short balance, holdings moved): the
            // deposit would revert, which the objective asks again for later.
            return Err(ChainError::Reverted { function: "deposit", reason: Some(why), tx_hash: None });
        }
        let received = word(3, "balanceOf(adjudicator)")?.saturating_sub(held_before);
        if received != amount {
            return Err(refuse(format!(
                "it takes a fee on transfer: a deposit of {amount} is credited in full but the adjudicator receives {received}"
            )));
        }
        let ours_before = word(4, "balanceOf(depositor)")?;
        // The adjudicator calls `transfer` through an interface returning `bool`: no return
        // data makes every payout revert (funds stuck), `false` makes it a silent no-op.
        match results.returned(5) {
            Ok(data) if data.len() < 32 => {
                return Err(refuse(
                    "its transfer returns no value, so every payout by the adjudicator would revert".into(),
                ))
            }
            Ok(data) if U256::from_be_slice(&data[..32]).is_zero() => {
                return Err(refuse(
                    "its transfer returns false, and the adjudicator pays out with transfer without checking it".into(),
                ))
            }
            Ok(_) => {}
            Err(why) => return Err(refuse(format!("a payout by the adjudicator would fail: {why}"))),
        }
        let paid = word(6, "balanceOf(depositor)")?.saturating_sub(ours_before);
        if paid != amount {
            return Err(refuse(format!(
                "it takes a fee on transfer: a payout of {amount} from the adjudicator delivers {paid}"
            )));
        }
        Ok(())
    }
}

/// The calls of the one simulated block, as `eth_simulateV1` answers them.
struct SimulatedCalls(Vec<Value>);

impl SimulatedCalls {
    fn parse(answer: &Value) -> Result<Self, String> {
        let calls = answer
            .get(0)
            .and_then(|block| block.get("calls"))
            .and_then(Value::as_array)
            .ok_or_else(|| "no calls in its block".to_owned())?;
        Ok(Self(calls.clone()))
    }

    /// Call `i` succeeded; otherwise its error message.
    fn succeeded(&self, i: usize) -> Result<&Value, String> {
        let call = self.0.get(i).ok_or_else(|| format!("no result for call {i}"))?;
        if call.get("status").and_then(Value::as_str) == Some("0x1") {
            return Ok(call);
        }
        let why = call
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("reverted without a reason");
        Err(why.to_owned())
    }

    /// The data call `i` returned, if it succeeded.
    fn returned(&self, i: usize) -> Result<Bytes, String> {
        let call = self.succeeded(i)?;
        let data = call.get("returnData").and_then(Value::as_str).unwrap_or("0x");
        data.parse().map_err(|e| format!("return data {data}: {e}"))
    }

    /// The first 32-byte word call `i` returned (a `uint256` or a `bool`); an empty return is
    /// `1` (tokens that return nothing from `approve`/`transfer` succeed by not reverting).
    fn word(&self, i: usize) -> Result<U256, String> {
        let bytes = self.returned(i)?;
        match bytes.len() {
            0 => Ok(U256::from(1)),
            n if n >= 32 => Ok(U256::from_be_slice(&bytes[..32])),
            n => Err(format!("{n} bytes of return data")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_calls_are_read_strictly() {
        let answer = json!([{ "calls": [
            { "status": "0x1", "returnData": format!("0x{:064x}", 5) },
            { "status": "0x1", "returnData": "0x" },
            { "status": "0x0", "returnData": "0x", "error": { "message": "Could not deposit" } },
            { "status": "0x1", "returnData": "0x0102" },
        ]}]);
        let calls = SimulatedCalls::parse(&answer).unwrap();
        assert_eq!(calls.word(0), Ok(U256::from(5)));
        assert_eq!(calls.word(1), Ok(U256::from(1)));
        assert_eq!(calls.word(2), Err("Could not deposit".to_owned()));
        assert!(calls.word(3).is_err());
        assert!(calls.word(4).is_err());
        assert!(SimulatedCalls::parse(&json!({"calls": []})).is_err());
    }
}
