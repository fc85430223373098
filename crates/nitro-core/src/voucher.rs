//! Payment vouchers of the `VirtualPaymentApp`: the payer's signed promise that the payee
//! may claim `amount` from a virtual channel.

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;

use crate::{abi, recover_signer, ChannelId, Signature, SignatureError, SigningKey};

/// A signed voucher for a cumulative `amount` in one virtual channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voucher {
    /// The virtual channel paid in.
    #[serde(with = "crate::json::bytes32")]
    pub channel_id: ChannelId,
    /// The total paid so far (vouchers are cumulative; the latest supersedes the others).
    #[serde(with = "crate::json::uint256")]
    pub amount: U256,
    /// The payer's signature over [`Voucher::hash_of`].
    pub signature: Signature,
}

impl Voucher {
    /// `keccak256(abi.encode(bytes32 channelId, uint256 amount))`.
    pub fn hash_of(channel_id: ChannelId, amount: U256) -> B256 {
        keccak256((channel_id, amount).abi_encode_params())
    }

    /// A voucher for `amount` in `channel_id`, signed by `payer`.
    pub fn sign(channel_id: ChannelId, amount: U256, payer: &SigningKey) -> Self {
        Self { channel_id, amount, signature: payer.sign(&Self::hash_of(channel_id, amount)) }
    }

    /// Who signed the voucher.
    pub fn signer(&self) -> Result<Address, SignatureError> {
        recover_signer(&Self::hash_of(self.channel_id, self.amount), &self.signature)
    }

    /// The app data that carries this voucher in a `VirtualPaymentApp` state.
    pub fn app_data(&self) -> Bytes {
        abi::VoucherAmountAndSignature { amount: self.amount, signature: (&self.signature).into() }.abi_encode().into()
    }
}
