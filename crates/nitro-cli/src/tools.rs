//! `nitro state …` and `nitro channel-id`: one JSON object in, one JSON object out.

use std::io::Read;

use clap::Subcommand;
use nitro_core::{json, recover_signer, FixedPart, Signature, SigningKey, State};
use serde_json::{json, Value};

use crate::UsageError;

/// Largest JSON input accepted (64 MiB): a state with ~250,000 allocations.
const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// `nitro state` subcommands.
#[derive(Subcommand)]
pub enum StateCommand {
    /// Print the channel id, encoded outcome, outcome hash and state hash of a state.
    Hash {
        /// JSON file with the state, or `-` for stdin.
        file: String,
    },
    /// Sign a state's hash (with the Ethereum prefix) and print the signature.
    Sign {
        /// The 32-byte private key, 0x-hex.
        #[arg(long)]
        key: String,
        /// JSON file with the state, or `-` for stdin.
        file: String,
    },
    /// Recover the address that signed a state.
    Recover {
        /// The 65-byte signature r ‖ s ‖ v, 0x-hex.
        #[arg(long)]
        signature: String,
        /// JSON file with the state, or `-` for stdin.
        file: String,
    },
}

/// Runs a `nitro state` subcommand.
pub fn run_state(cmd: StateCommand) -> Result<Value, UsageError> {
    match cmd {
        StateCommand::Hash { file } => {
            let state: State = read_json(&file, "state")?;
            let channel_id = state.channel_id();
            let encoded_outcome = state.outcome.encode();
            Ok(json!({
                "channelId": json::format_hex(channel_id.as_slice()),
                "encodedOutcome": json::format_hex(&encoded_outcome),
                "outcomeHash": json::format_hex(alloy_primitives::keccak256(&encoded_outcome).as_slice()),
                "stateHash": json::format_hex(state.hash_with_channel_id(channel_id).as_slice()),
            }))
        }
        StateCommand::Sign { key, file } => {
            let key = SigningKey::from_hex(&key)
                .map_err(|e| UsageError(format!("--key: {e} (expected 32 bytes of 0x-hex)")))?;
            let state: State = read_json(&file, "state")?;
            let hash = state.hash();
            let signature = key.sign(&hash);
            Ok(json!({
                "stateHash": json::format_hex(hash.as_slice()),
                "signature": signature_json(&signature),
                "signer": key.address().to_checksum(None),
            }))
        }
        StateCommand::Recover { signature, file } => {
            let bytes = json::decode_hex(signature.trim()).map_err(|e| UsageError(format!("--signature: {e}")))?;
            let signature = Signature::from_bytes(&bytes).map_err(|e| UsageError(format!("--signature: {e}")))?;
            let state: State = read_json(&file, "state")?;
            let signer =
                recover_signer(&state.hash(), &signature).map_err(|e| UsageError(format!("--signature: {e}")))?;
            Ok(json!({ "signer": signer.to_checksum(None) }))
        }
    }
}

/// `nitro channel-id FILE`: accepts a fixed part, or a full state.
pub fn channel_id(file: &str) -> Result<Value, UsageError> {
    let value: Value = read_json(file, "fixed part")?;
    let id = match serde_json::from_value::<FixedPart>(value.clone()) {
        Ok(fixed) => fixed.channel_id(),
        Err(fixed_err) => match serde_json::from_value::<State>(value) {
            Ok(state) => state.channel_id(),
            Err(_) => return Err(UsageError(format!("{file}: not a valid fixed part: {fixed_err}"))),
        },
    };
    Ok(json!({ "channelId": json::format_hex(id.as_slice()) }))
}

fn signature_json(signature: &Signature) -> Value {
    json!({
        "r": json::format_hex(signature.r().as_slice()),
        "s": json::format_hex(signature.s().as_slice()),
        "v": format!("{:#x}", signature.v()),
        "flat": json::format_hex(&signature.to_bytes()),
    })
}

/// Reads `file` (or stdin for `-`) and decodes it as `what`.
fn read_json<T: serde::de::DeserializeOwned>(file: &str, what: &str) -> Result<T, UsageError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().take(MAX_INPUT + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text))
    };
    read.map_err(|e| UsageError(format!("{file}: {e}")))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(UsageError(format!("{file}: input larger than {MAX_INPUT} bytes")));
    }
    serde_json::from_str(&text).map_err(|e| UsageError(format!("{file}: not a valid {what}: {e}")))
}
