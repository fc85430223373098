//! The per-asset params of `ledger_open` (ADR-0022 §1–2): `assets: [{ asset, my_amount,
//! counterparty_amount }]`, or today's single-asset shorthand (`my_amount`,
//! `counterparty_amount`, optional `asset`), never both.

use alloy_primitives::{Address, U256};
use serde_json::{json, Value};

use super::{address, amount, wrong_type, RpcError};

/// At most this many assets in one ledger: each is one more exit in every state both sign and
/// one more transfer on a unilateral exit.
pub const MAX_LEDGER_ASSETS: usize = 8;

/// One asset of a ledger opening: what we and the counterparty deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssetAmounts {
    /// The asset (the zero address: ETH).
    pub asset: Address,
    /// What we deposit.
    pub my_amount: U256,
    /// What the counterparty deposits.
    pub counterparty_amount: U256,
}

/// Reads `ledger_open`'s assets: the `assets` list (one to [`MAX_LEDGER_ASSETS`] entries, each
/// an object of exactly `asset`, `my_amount`, `counterparty_amount`, no asset twice) or the
/// single-asset fields; giving both is refused.
pub(super) fn parse(
    assets: Option<&Value>,
    asset: Option<&Value>,
    my_amount: Option<&Value>,
    counterparty_amount: Option<&Value>,
) -> Result<Vec<AssetAmounts>, RpcError> {
    let Some(list) = assets else {
        let required = |name: &str| RpcError::invalid_field(name, "required");
        let mine = my_amount.ok_or_else(|| required("my_amount"))?;
        let theirs = counterparty_amount.ok_or_else(|| required("counterparty_amount"))?;
        return Ok(vec![AssetAmounts {
            asset: asset.map(|v| address(v, "asset")).transpose()?.unwrap_or(Address::ZERO),
            my_amount: amount(mine, "my_amount")?,
            counterparty_amount: amount(theirs, "counterparty_amount")?,
        }]);
    };
    if asset.is_some() || my_amount.is_some() || counterparty_amount.is_some() {
        return Err(RpcError::invalid_field(
            "assets",
            "give either assets or my_amount/counterparty_amount/asset, not both",
        ));
    }
    let list = list.as_array().ok_or_else(|| wrong_type("assets", "an array of assets", list))?;
    if list.is_empty() || list.len() > MAX_LEDGER_ASSETS {
        return Err(RpcError::invalid_field("assets", format!("expected 1 to {MAX_LEDGER_ASSETS} assets")));
    }
    let mut parsed: Vec<AssetAmounts> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let field = |name: &str| format!("assets[{i}].{name}");
        let map = entry.as_object().ok_or_else(|| wrong_type(&format!("assets[{i}]"), "an object", entry))?;
        if let Some(unknown) = map.keys().find(|k| !["asset", "my_amount", "counterparty_amount"].contains(&k.as_str()))
        {
            return Err(RpcError::invalid_field(&field(unknown), "unknown parameter"));
        }
        let get = |name: &str| {
            map.get(name).filter(|v| !v.is_null()).ok_or_else(|| RpcError::invalid_field(&field(name), "required"))
        };
        let a = AssetAmounts {
            asset: address(get("asset")?, &field("asset"))?,
            my_amount: amount(get("my_amount")?, &field("my_amount"))?,
            counterparty_amount: amount(get("counterparty_amount")?, &field("counterparty_amount"))?,
        };
        if parsed.iter().any(|p| p.asset == a.asset) {
            return Err(RpcError::invalid_field(&field("asset"), format!("asset {} given twice", a.asset)));
        }
        parsed.push(a);
    }
    Ok(parsed)
}

/// The canonical params of `assets`: the single-asset fields for one asset (as before
/// multi-asset ledgers), the `assets` list otherwise.
pub(super) fn to_params(assets: &[AssetAmounts]) -> Value {
    let addr = |a: &Address| Value::String(a.to_checksum(None));
    let amount = |v: &U256| Value::String(v.to_string());
    match assets {
        [one] => json!({
            "my_amount": amount(&one.my_amount),
            "counterparty_amount": amount(&one.counterparty_amount),
            "asset": addr(&one.asset),
        }),
        _ => json!({
            "assets": assets.iter().map(|a| json!({
                "asset": addr(&a.asset),
                "my_amount": amount(&a.my_amount),
                "counterparty_amount": amount(&a.counterparty_amount),
            })).collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::ApiRequest;
    use super::*;

    const TOKEN: &str = "0x7070707070707070707070707070707070707070";
    const PEER: &str = "0x1111111111111111111111111111111111111111";

    fn open(params: Value) -> Result<Vec<AssetAmounts>, RpcError> {
        match ApiRequest::parse("ledger_open", &params)? {
            ApiRequest::LedgerOpen(o) => {
                // The canonical form reads back to the same request.
                let again = ApiRequest::parse("ledger_open", &ApiRequest::LedgerOpen(o.clone()).to_params()).unwrap();
                assert_eq!(again, ApiRequest::LedgerOpen(o.clone()));
                Ok(o.assets)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ledger_open_takes_assets_or_the_single_asset_shorthand() {
        let eth = Address::ZERO;
        let token: Address = TOKEN.parse().unwrap();
        let single = open(json!({ "counterparty": PEER, "my_amount": "5", "counterparty_amount": "3" })).unwrap();
        assert_eq!(
            single,
            vec![AssetAmounts { asset: eth, my_amount: U256::from(5), counterparty_amount: U256::from(3) }]
        );
        let two = open(json!({ "counterparty": PEER, "assets": [
            { "asset": TOKEN, "my_amount": "7", "counterparty_amount": "0" },
            { "asset": "0x0000000000000000000000000000000000000000", "my_amount": "1", "counterparty_amount": "2" },
        ]}))
        .unwrap();
        assert_eq!(two[0].asset, token);
        assert_eq!(two[1], AssetAmounts { asset: eth, my_amount: U256::from(1), counterparty_amount: U256::from(2) });
    }

    #[test]
    fn bad_assets_are_refused_naming_the_field() {
        let entry = json!({ "asset": TOKEN, "my_amount": "1", "counterparty_amount": "1" });
        let field = |params: Value| {
            let e = open(params).expect_err("accepted");
            e.data.and_then(|d| d["field"].as_str().map(str::to_owned)).unwrap_or_default()
        };
        let both = json!({ "counterparty": PEER, "my_amount": "1", "assets": [entry.clone()] });
        assert_eq!(field(both), "assets");
        assert_eq!(field(json!({ "counterparty": PEER, "assets": [] })), "assets");
        assert_eq!(field(json!({ "counterparty": PEER, "assets": "x" })), "assets");
        assert_eq!(field(json!({ "counterparty": PEER, "assets": [entry.clone(), entry.clone()] })), "assets[1].asset");
        let extra = json!({ "asset": TOKEN, "my_amount": "1", "counterparty_amount": "1", "x": 1 });
        assert_eq!(field(json!({ "counterparty": PEER, "assets": [extra] })), "assets[0].x");
        let missing = json!({ "asset": TOKEN, "my_amount": "1" });
        assert_eq!(field(json!({ "counterparty": PEER, "assets": [missing] })), "assets[0].counterparty_amount");
        let many: Vec<Value> = (0..=MAX_LEDGER_ASSETS)
            .map(|i| json!({ "asset": format!("0x{:040x}", i), "my_amount": "1", "counterparty_amount": "1" }))
            .collect();
        assert_eq!(field(json!({ "counterparty": PEER, "assets": many })), "assets");
        assert_eq!(field(json!({ "counterparty": PEER, "counterparty_amount": "1" })), "my_amount");
    }
}
