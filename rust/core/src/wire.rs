//! The wire format of DESIGN.md §2: the same MessagePack maps msgspec writes for the
//! Structs in `python/jukisync/messages.py` (field names as keys, declaration order,
//! every field present). `tests/vectors/vectors.json` pins the bytes for both sides.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub seq: u64,
    pub juminhyo_code: String,
    pub previous_juminhyo_code: Option<String>,
    pub kojin_bango: String,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: u8,
    pub address: String,
    pub municipality: String,
    pub reason: String,
    pub changed_on: String,
    pub recorded_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBody {
    pub origin: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub prev_hash: ByteBuf,
    pub created_at: u64,
    pub updates: Vec<Update>,
    #[serde(default)]
    pub supersedes: Option<ByteBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub centre: String,
    pub key_id: String,
    pub received_at: u64,
    pub sig: ByteBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub body: ByteBuf,
    pub key_id: String,
    pub sig: ByteBuf,
    #[serde(default)]
    pub attestations: Vec<Attestation>,
}

/// The head fields of a body, decoded without the updates: enough to place a bundle
/// in its origin's chain even when its updates do not decode.
#[derive(Debug, Clone, Deserialize)]
pub struct BodyHead {
    pub origin: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub prev_hash: ByteBuf,
    pub created_at: u64,
    #[serde(default)]
    pub supersedes: Option<ByteBuf>,
}

/// Encode as msgspec does: a map with string keys.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(value)?)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| CoreError::Malformed(format!("{what}: {e}")))
}

pub const HASH_LEN: usize = 32;
pub const ZERO_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// Copy a 32-byte hash out of a wire field, naming the field when its length is wrong.
pub fn hash32(bytes: &[u8], field: &str) -> Result<[u8; HASH_LEN]> {
    bytes.try_into().map_err(|_| CoreError::Malformed(format!("{field}: expected 32 bytes, got {}", bytes.len())))
}
