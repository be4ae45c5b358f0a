//! The key registry (DESIGN.md §7): which key belongs to which origin or centre, and
//! when it is valid. The registry file is itself signed by a root key.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::error::{CoreError, Result};
use crate::wire::{self, Bin};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub owner: String,
    pub key_id: String,
    pub public_key: Bin,
    pub not_before: u64,
    #[serde(default)]
    pub not_after: Option<u64>,
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryBody {
    pub version: u64,
    pub issued_at: u64,
    pub entries: Vec<KeyEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRegistry {
    pub body: Bin,
    pub sig: Bin,
}

#[derive(Debug, Clone)]
pub struct RegisteredKey {
    pub owner: String,
    pub key: VerifyingKey,
    pub not_before: u64,
    pub not_after: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// Why a key may not be used at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Unknown,
    WrongOwner(String),
    NotYetValid,
    Expired,
    Revoked,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Unknown => write!(f, "unknown key"),
            KeyProblem::WrongOwner(owner) => write!(f, "key belongs to {owner}"),
            KeyProblem::NotYetValid => write!(f, "key not yet valid"),
            KeyProblem::Expired => write!(f, "key expired"),
            KeyProblem::Revoked => write!(f, "key revoked"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub version: u64,
    keys: HashMap<String, RegisteredKey>,
}

impl Registry {
    /// Verify the registry file against the root public key and index its keys.
    pub fn load(signed: &[u8], root_public_key: &[u8]) -> Result<Self> {
        let signed: SignedRegistry =
            wire::decode(signed, "registry").map_err(|e| CoreError::Registry(e.to_string()))?;
        let root = crypto::verifying_key(root_public_key).map_err(|e| CoreError::Registry(format!("root key: {e}")))?;
        if !crypto::verify(&root, &signed.body, &signed.sig) {
            return Err(CoreError::Registry("signature does not verify under the root key".into()));
        }
        let body: RegistryBody =
            wire::decode(&signed.body, "registry body").map_err(|e| CoreError::Registry(e.to_string()))?;
        let mut keys = HashMap::with_capacity(body.entries.len());
        for entry in body.entries {
            let key = crypto::verifying_key(&entry.public_key)
                .map_err(|e| CoreError::Registry(format!("key {}: {e}", entry.key_id)))?;
            let registered = RegisteredKey {
                owner: entry.owner,
                key,
                not_before: entry.not_before,
                not_after: entry.not_after,
                revoked_at: entry.revoked_at,
            };
            if keys.insert(entry.key_id.clone(), registered).is_some() {
                return Err(CoreError::Registry(format!("key id {} listed twice", entry.key_id)));
            }
        }
        Ok(Registry { version: body.version, keys })
    }

    pub fn key(&self, key_id: &str) -> Option<&RegisteredKey> {
        self.keys.get(key_id)
    }

    pub fn owners(&self) -> Vec<String> {
        let mut owners: Vec<String> = self.keys.values().map(|k| k.owner.clone()).collect();
        owners.sort();
        owners.dedup();
        owners
    }

    /// The key `key_id` if it belongs to `owner` and is valid at `at` (µs).
    pub fn usable(&self, key_id: &str, owner: &str, at: u64) -> std::result::Result<&RegisteredKey, KeyProblem> {
        let key = self.keys.get(key_id).ok_or(KeyProblem::Unknown)?;
        if key.owner != owner {
            return Err(KeyProblem::WrongOwner(key.owner.clone()));
        }
        if at < key.not_before {
            return Err(KeyProblem::NotYetValid);
        }
        if key.revoked_at.is_some_and(|r| at >= r) {
            return Err(KeyProblem::Revoked);
        }
        if key.not_after.is_some_and(|n| at >= n) {
            return Err(KeyProblem::Expired);
        }
        Ok(key)
    }
}

/// Build and sign a registry (used by tests and tools; Python has its own builder).
pub fn sign_registry(body: &RegistryBody, root_secret: &[u8]) -> Result<Vec<u8>> {
    let body_bytes = wire::encode(body)?;
    let sig = crypto::sign(root_secret, &body_bytes)?;
    wire::encode(&SignedRegistry { body: Bin::from(body_bytes), sig: Bin::from(sig.to_vec()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(owner: &str, key_id: &str, secret: &[u8; 32]) -> KeyEntry {
        KeyEntry {
            owner: owner.into(),
            key_id: key_id.into(),
            public_key: Bin::from(crypto::public_key(secret).unwrap().to_vec()),
            not_before: 100,
            not_after: Some(200),
            revoked_at: None,
        }
    }

    #[test]
    fn validity_window_and_owner() {
        let root = crypto::generate_secret();
        let k = crypto::generate_secret();
        let mut revoked = entry("352039", "k2", &k);
        revoked.revoked_at = Some(150);
        let body = RegistryBody { version: 1, issued_at: 1, entries: vec![entry("352012", "k1", &k), revoked] };
        let bytes = sign_registry(&body, &root).unwrap();
        let reg = Registry::load(&bytes, &crypto::public_key(&root).unwrap()).unwrap();
        assert!(reg.usable("k1", "352012", 100).is_ok());
        assert_eq!(reg.usable("k1", "352012", 99).unwrap_err(), KeyProblem::NotYetValid);
        assert_eq!(reg.usable("k1", "352012", 200).unwrap_err(), KeyProblem::Expired);
        assert_eq!(reg.usable("k1", "352039", 150).unwrap_err(), KeyProblem::WrongOwner("352012".into()));
        assert_eq!(reg.usable("k2", "352039", 149).map(|_| ()), Ok(()));
        assert_eq!(reg.usable("k2", "352039", 150).unwrap_err(), KeyProblem::Revoked);
        assert_eq!(reg.usable("nope", "352039", 150).unwrap_err(), KeyProblem::Unknown);
    }

    #[test]
    fn tampered_or_foreign_root_is_refused() {
        let root = crypto::generate_secret();
        let body = RegistryBody { version: 1, issued_at: 1, entries: vec![] };
        let mut bytes = sign_registry(&body, &root).unwrap();
        let other = crypto::generate_secret();
        assert!(Registry::load(&bytes, &crypto::public_key(&other).unwrap()).is_err());
        let n = bytes.len();
        bytes[n - 70] ^= 1;
        assert!(Registry::load(&bytes, &crypto::public_key(&root).unwrap()).is_err());
    }
}
