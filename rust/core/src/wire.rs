//! The wire format of DESIGN.md §2: the same MessagePack maps msgspec writes for the
//! Structs in `python/jukisync/messages.py` (field names as keys, declaration order,
//! every field present). `tests/vectors/vectors.json` pins the bytes for both sides.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    pub prev_hash: Bin,
    pub created_at: u64,
    pub updates: Vec<Update>,
    #[serde(default)]
    pub supersedes: Option<Bin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub centre: String,
    pub key_id: String,
    pub received_at: u64,
    pub sig: Bin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub body: Bin,
    pub key_id: String,
    pub sig: Bin,
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
    pub prev_hash: Bin,
    pub created_at: u64,
    #[serde(default)]
    pub supersedes: Option<Bin>,
}

/// A MessagePack `bin` value. Unlike `serde_bytes::ByteBuf` it refuses a `str`, as
/// msgspec does for a `bytes` field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bin(pub Vec<u8>);

impl Bin {
    pub fn new() -> Self {
        Bin(Vec::new())
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.0.clone()
    }
}

impl From<Vec<u8>> for Bin {
    fn from(v: Vec<u8>) -> Self {
        Bin(v)
    }
}

impl std::ops::Deref for Bin {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bin {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("MessagePack bin bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Bin, E> {
                Ok(Bin(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl BodyHead {
    pub fn of(body: &BundleBody) -> Self {
        BodyHead {
            origin: body.origin.clone(),
            first_seq: body.first_seq,
            last_seq: body.last_seq,
            prev_hash: body.prev_hash.clone(),
            created_at: body.created_at,
            supersedes: body.supersedes.clone(),
        }
    }
}

/// Encode as msgspec does: a map with string keys.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decode as strictly as msgspec does: the message must be a map (a struct encoded
/// as an array is refused) and must use every byte (trailing bytes are refused).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let malformed = |why: String| CoreError::Malformed(format!("{what}: {why}"));
    match bytes.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        Some(_) => return Err(malformed("not a MessagePack map".into())),
        None => return Err(malformed("empty".into())),
    }
    let mut rest = bytes;
    let value = match T::deserialize(&mut rmp_serde::Deserializer::new(&mut rest)) {
        Ok(v) => v,
        // Decode again only on failure, tracking the path, to name the field at fault
        // ("updates[2].kojin_bango: ..."); the fast path pays nothing for it.
        Err(e) => {
            let mut again = bytes;
            let tracked = serde_path_to_error::deserialize::<_, T>(&mut rmp_serde::Deserializer::new(&mut again));
            return Err(malformed(match tracked {
                Err(t) if t.path().to_string() != "." => {
                    let path = t.path().to_string();
                    format!("{path}: {}", t.into_inner())
                }
                _ => e.to_string(),
            }));
        }
    };
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

pub const HASH_LEN: usize = 32;
pub const ZERO_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

/// Copy a 32-byte hash out of a wire field, naming the field when its length is wrong.
pub fn hash32(bytes: &[u8], field: &str) -> Result<[u8; HASH_LEN]> {
    bytes.try_into().map_err(|_| CoreError::Malformed(format!("{field}: expected 32 bytes, got {}", bytes.len())))
}

/// The origin and sequence range an envelope's body claims, read without decoding the
/// updates (the body's first fields) nor checking anything: for routing and batching
/// before `Store::apply` verifies. None when the bytes are not such an envelope.
pub fn bundle_span(envelope: &[u8]) -> Option<(&str, u64, u64)> {
    let mut r = crate::msgpack::MsgReader::new(envelope);
    for _ in 0..r.map_len()? {
        if r.raw_str()? == b"body" {
            return body_span(r.bin()?);
        }
        r.skip()?;
    }
    None
}

fn body_span(body: &[u8]) -> Option<(&str, u64, u64)> {
    let mut r = crate::msgpack::MsgReader::new(body);
    let (mut origin, mut first, mut last) = (None, None, None);
    for _ in 0..r.map_len()? {
        match r.raw_str()? {
            b"origin" => origin = Some(std::str::from_utf8(r.raw_str()?).ok()?),
            b"first_seq" => first = Some(r.uint()?),
            b"last_seq" => last = Some(r.uint()?),
            _ => r.skip()?,
        }
        if let (Some(origin), Some(first), Some(last)) = (origin, first, last) {
            return Some((origin, first, last));
        }
    }
    None
}
