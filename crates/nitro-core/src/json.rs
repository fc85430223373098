//! Strict JSON conventions of the Nitro vectors: lowercase `0x`-hex byte strings,
//! EIP-55 addresses, minimal `0x`-hex unsigned integers.
//!
//! Every helper here refuses what the convention does not allow (missing `0x`, a second `0x`,
//! non-hex characters, wrong lengths, integers too wide for their Solidity type, addresses
//! whose mixed-case spelling fails the EIP-55 checksum), so that a decoded value always
//! re-encodes to the same on-chain bytes.
//!
//! Integers may be zero-padded up to 64 hex digits (the width of a full `uint256` word, as
//! some tools write them), never more: `0x` followed by thousands of zeros is refused as too
//! long, whatever value it spells. Serialization always writes the minimal form.

use alloy_primitives::{Address, Bytes, B256, U256};
use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

/// The largest value a Solidity `uint48` holds (turn numbers, challenge durations).
pub const MAX_UINT48: u64 = (1 << 48) - 1;

/// Upper bound on a hex string we are willing to decode (16 MiB of bytes).
const MAX_HEX_CHARS: usize = 32 * 1024 * 1024;

/// Most hex digits an integer may have (leading zeros included): one 256-bit word.
pub const MAX_UINT_DIGITS: usize = 64;

fn strip_0x(s: &str) -> Result<&str, String> {
    s.strip_prefix("0x").ok_or_else(|| format!("expected a 0x-prefixed hex string, got {:?}", truncate(s)))
}

fn truncate(s: &str) -> String {
    if s.len() > 40 {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    }
}

/// Decodes `0x`-hex into bytes; an odd number of digits or a non-hex character is an error.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits = strip_0x(s)?;
    if digits.len() > MAX_HEX_CHARS {
        return Err(format!("hex string too long ({} characters)", digits.len()));
    }
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits in {:?}", truncate(s)));
    }
    // Checked here, not left to the hex crate, which would strip a second `0x` ("0x0x12").
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("invalid hex {:?}: {bad:?} is not a hex digit", truncate(s)));
    }
    alloy_primitives::hex::decode(digits).map_err(|e| format!("invalid hex {:?}: {e}", truncate(s)))
}

/// Decodes `0x`-hex of exactly `N` bytes.
pub fn decode_fixed<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let bytes = decode_hex(s)?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("expected {N} bytes, got {} in {:?}", bytes.len(), truncate(s)))
}

/// Parses an unsigned integer written as `0x`-hex that must fit in `bits` bits.
pub fn parse_uint(s: &str, bits: usize) -> Result<U256, String> {
    let digits = strip_0x(s)?;
    if digits.is_empty() {
        return Err("empty hex integer \"0x\" (zero is \"0x0\")".into());
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid hex integer {:?}", truncate(s)));
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_UINT_DIGITS {
        return Err(format!("integer {:?} overflows uint{bits}", truncate(s)));
    }
    if digits.len() > MAX_UINT_DIGITS {
        return Err(format!(
            "integer {:?} has {} hex digits; at most {MAX_UINT_DIGITS} (zero padding included)",
            truncate(s),
            digits.len()
        ));
    }
    let value = U256::from_str_radix(if significant.is_empty() { "0" } else { significant }, 16)
        .map_err(|e| format!("invalid hex integer {:?}: {e}", truncate(s)))?;
    if value.bit_len() > bits {
        return Err(format!("integer {s} overflows uint{bits}"));
    }
    Ok(value)
}

/// Parses an address; a mixed-case spelling must carry a valid EIP-55 checksum.
pub fn parse_address(s: &str) -> Result<Address, String> {
    let bytes: [u8; 20] = decode_fixed(s)?;
    let address = Address::from(bytes);
    let digits = &s[2..];
    let mixed = digits.bytes().any(|b| b.is_ascii_lowercase()) && digits.bytes().any(|b| b.is_ascii_uppercase());
    if mixed && address.to_checksum(None)[2..] != *digits {
        return Err(format!("address {s} fails its EIP-55 checksum"));
    }
    Ok(address)
}

/// Formats an unsigned integer as minimal `0x`-hex (`0x0` for zero).
pub fn format_uint(value: U256) -> String {
    format!("{value:#x}")
}

/// Formats bytes as lowercase `0x`-hex.
pub fn format_hex(bytes: &[u8]) -> String {
    alloy_primitives::hex::encode_prefixed(bytes)
}

fn de_str<'de, D: Deserializer<'de>>(d: D) -> Result<std::borrow::Cow<'de, str>, D::Error> {
    <std::borrow::Cow<'de, str>>::deserialize(d)
}

/// Serde for [`Address`] as an EIP-55 string.
pub mod address {
    use super::*;
    /// Serializes an address with its EIP-55 checksum.
    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }
    /// Deserializes a checksummed or single-case address.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        parse_address(&de_str(d)?).map_err(D::Error::custom)
    }
}

/// Serde for a list of [`Address`]es.
pub mod address_vec {
    use super::*;
    use serde::ser::SerializeSeq;
    /// Serializes addresses with their EIP-55 checksums.
    pub fn serialize<S: Serializer>(v: &[Address], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for a in v {
            seq.serialize_element(&a.to_checksum(None))?;
        }
        seq.end()
    }
    /// Deserializes a list of addresses.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Address>, D::Error> {
        let raw = <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        raw.iter().map(|s| parse_address(s).map_err(D::Error::custom)).collect()
    }
}

/// Serde for [`B256`] as 32 bytes of `0x`-hex.
pub mod bytes32 {
    use super::*;
    /// Serializes 32 bytes as lowercase hex.
    pub fn serialize<S: Serializer>(b: &B256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_hex(b.as_slice()))
    }
    /// Deserializes exactly 32 bytes of hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<B256, D::Error> {
        decode_fixed::<32>(&de_str(d)?).map(B256::from).map_err(D::Error::custom)
    }
}

/// Serde for [`Bytes`] as `0x`-hex of any even length.
pub mod bytes {
    use super::*;
    /// Serializes bytes as lowercase hex.
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_hex(b))
    }
    /// Deserializes hex bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        decode_hex(&de_str(d)?).map(Bytes::from).map_err(D::Error::custom)
    }
}

/// Serde for [`U256`] as minimal `0x`-hex.
pub mod uint256 {
    use super::*;
    /// Serializes as minimal hex.
    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_uint(*v))
    }
    /// Deserializes a hex integer of at most 256 bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        parse_uint(&de_str(d)?, 256).map_err(D::Error::custom)
    }
}

/// Serde for a `uint64` held in a `u64`.
pub mod uint64 {
    use super::*;
    /// Serializes as minimal hex.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    /// Deserializes a hex integer of at most 64 bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse_uint(&de_str(d)?, 64).map(|v| v.to::<u64>()).map_err(D::Error::custom)
    }
}

/// Serde for a Solidity `uint48` held in a [`U48`](alloy_primitives::aliases::U48).
pub mod uint48 {
    use super::*;
    use alloy_primitives::aliases::U48;
    /// Serializes as minimal hex.
    pub fn serialize<S: Serializer>(v: &U48, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#x}", v.to::<u64>()))
    }
    /// Deserializes a hex integer of at most 48 bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U48, D::Error> {
        parse_uint(&de_str(d)?, 48).map(|v| U48::from(v.to::<u64>())).map_err(D::Error::custom)
    }
}

/// Serde for a Solidity `uint8` held in a `u8`.
pub mod uint8 {
    use super::*;
    /// Serializes as minimal hex.
    pub fn serialize<S: Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }
    /// Deserializes a hex integer of at most 8 bits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        parse_uint(&de_str(d)?, 8).map(|v| v.to::<u8>()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_parsing_is_strict() {
        assert_eq!(parse_uint("0x0", 8).unwrap(), U256::ZERO);
        assert_eq!(parse_uint("0x00ff", 8).unwrap(), U256::from(255));
        assert!(parse_uint("0x100", 8).is_err());
        assert!(parse_uint("0x", 8).is_err());
        assert!(parse_uint("ff", 8).is_err());
        assert!(parse_uint("0xg", 8).is_err());
        assert!(parse_uint("0x-1", 8).is_err());
        assert!(parse_uint("0x+1", 8).is_err());
        assert_eq!(parse_uint("0xffffffffffff", 48).unwrap(), U256::from(MAX_UINT48));
        assert!(parse_uint("0x1000000000000", 48).is_err());
        assert!(parse_uint(&format!("0x1{}", "0".repeat(64)), 256).is_err());
    }

    #[test]
    fn address_checksum_is_enforced_for_mixed_case() {
        let good = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert!(parse_address(good).is_ok());
        assert!(parse_address(&good.to_lowercase()).is_ok());
        assert!(parse_address(&format!("0x{}", good[2..].to_uppercase())).is_ok());
        assert!(parse_address("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266").is_err());
        assert!(parse_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb922").is_err());
    }

    #[test]
    fn a_second_prefix_is_refused_everywhere() {
        assert!(decode_hex("0x0x12").is_err());
        assert!(decode_hex("0x0X12").is_err());
        assert!(decode_fixed::<1>("0x0x").is_err());
        assert!(decode_fixed::<32>(&format!("0x0x{}", "11".repeat(31))).is_err());
        assert!(parse_address(&format!("0x0x{}", "ab".repeat(19))).is_err());
        assert!(parse_uint("0x0x1", 256).is_err());
        for bad in [" 0x12", "0x12 ", "0x1_2", "0x+1", "0x\u{0}"] {
            assert!(decode_hex(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn integers_may_be_padded_to_one_word_and_no_further() {
        assert_eq!(parse_uint(&format!("0x{}1", "0".repeat(63)), 256).unwrap(), U256::from(1));
        assert_eq!(parse_uint(&format!("0x{}", "0".repeat(64)), 8).unwrap(), U256::ZERO);
        assert!(parse_uint(&format!("0x{}1", "0".repeat(64)), 256).unwrap_err().contains("at most 64"));
        assert!(parse_uint(&format!("0x{}", "0".repeat(5000)), 256).unwrap_err().contains("at most 64"));
        assert_eq!(parse_uint(&format!("0x{}", "f".repeat(64)), 256).unwrap(), U256::MAX);
        assert!(parse_uint("0xffffffffffffffff", 64).is_ok());
        assert!(parse_uint("0x10000000000000000", 64).is_err());
        assert!(parse_uint("0x100", 8).is_err());
        assert_eq!(format_uint(U256::from(255)), "0xff");
        assert_eq!(format_uint(U256::ZERO), "0x0");
    }

    #[test]
    fn serde_helpers_keep_their_promises() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct All {
            #[serde(with = "address")]
            a: Address,
            #[serde(with = "bytes32")]
            h: B256,
            #[serde(with = "bytes")]
            b: Bytes,
            #[serde(with = "uint256")]
            u: U256,
            #[serde(with = "uint64")]
            n: u64,
            #[serde(with = "uint48")]
            t: alloy_primitives::aliases::U48,
            #[serde(with = "uint8")]
            v: u8,
            #[serde(with = "address_vec")]
            p: Vec<Address>,
        }
        let good = serde_json::json!({
            "a": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "h": format!("0x{}", "ab".repeat(32)),
            "b": "0x0102", "u": "0x1", "n": "0xffffffffffffffff", "t": "0xffffffffffff", "v": "0xff",
            "p": ["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"],
        });
        let decoded: All = serde_json::from_value(good.clone()).unwrap();
        let again: All = serde_json::from_value(serde_json::to_value(&decoded).unwrap()).unwrap();
        assert_eq!(decoded, again);
        assert_eq!(serde_json::to_value(&decoded).unwrap()["a"], good["a"]);
        let refuse = |field: &str, value: serde_json::Value| {
            let mut v = good.clone();
            v[field] = value;
            assert!(serde_json::from_value::<All>(v.clone()).is_err(), "{field} = {}", v[field]);
        };
        refuse("a", "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into()); // bad checksum
        refuse("a", format!("0x0x{}", "ab".repeat(19)).into());
        refuse("a", "f39fd6e51aad88f6f4ce6ab8827279cfffb92266".into()); // no prefix
        refuse("h", format!("0x{}", "ab".repeat(31)).into()); // 31 bytes
        refuse("h", format!("0x0x{}", "ab".repeat(31)).into());
        refuse("b", "0x012".into()); // odd
        refuse("b", 12.into()); // not a string
        refuse("u", format!("0x1{}", "0".repeat(64)).into()); // 257 bits
        refuse("u", "0x".into());
        refuse("u", "12".into());
        refuse("n", "0x10000000000000000".into());
        refuse("t", "0x1000000000000".into());
        refuse("v", "0x100".into());
        refuse("p", serde_json::json!(["0x12"]));
    }

    #[test]
    fn hex_rejects_odd_and_non_hex() {
        assert!(decode_hex("0x123").is_err());
        assert!(decode_hex("0xzz").is_err());
        assert!(decode_hex("1234").is_err());
        assert_eq!(decode_hex("0x").unwrap(), Vec::<u8>::new());
        assert!(decode_fixed::<32>("0x00").is_err());
        assert!(truncate(&"é".repeat(40)).ends_with('…'));
    }
}
