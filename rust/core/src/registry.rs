//! The key registry (DESIGN.md §7): which key belongs to which origin or centre, and
//! when it is valid. The registry file is itself signed by a root key.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::codes;
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
    /// "origin" (a municipality signs its bundles) or "centre" (an aggregation centre
    /// attests hops); when absent, inferred from the owner (see `KeyRole::of_owner`).
    #[serde(default)]
    pub role: Option<String>,
    /// The prefectures (2 digits) a centre key may attest for; empty for an origin.
    #[serde(default)]
    pub prefectures: Vec<String>,
}

/// What a key may sign: an origin's bundles, or a centre's hop attestations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Origin,
    Centre,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Origin => "origin",
            KeyRole::Centre => "centre",
        }
    }

    /// The role an owner name implies: digits name a municipality (a valid local
    /// government code), a name starting with a letter a centre. Anything else is no
    /// owner at all. The one rule for owners, used by `Registry::load` and the tools.
    pub fn of_owner(owner: &str) -> std::result::Result<Self, String> {
        if owner.bytes().all(|b| b.is_ascii_digit()) {
            if codes::is_valid_local_government_code(owner) {
                return Ok(KeyRole::Origin);
            }
            return Err(format!(
                "owner {owner:?} is not a valid local government code (6 digits, prefecture 01-47, check digit)"
            ));
        }
        let mut chars = owner.chars();
        let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if first_is_letter
            && owner.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Ok(KeyRole::Centre);
        }
        Err(format!(
            "owner {owner:?} is neither a local government code nor a centre id (a letter, then letters, digits, '_', '.', '-')"
        ))
    }
}

/// Whether `p` names a prefecture: two digits, 01 to 47.
pub fn is_prefecture(p: &str) -> bool {
    p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) && (1..=47).contains(&p.parse::<u8>().unwrap_or(0))
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
    pub role: KeyRole,
    pub prefectures: Vec<String>,
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
    /// An origin's key used to attest, or a centre's to sign a bundle.
    WrongRole(KeyRole),
    /// A centre key attesting for a prefecture its centre does not serve.
    NotServing(String),
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Unknown => write!(f, "unknown key"),
            KeyProblem::WrongOwner(owner) => write!(f, "key belongs to {owner}"),
            KeyProblem::NotYetValid => write!(f, "key not yet valid"),
            KeyProblem::Expired => write!(f, "key expired"),
            KeyProblem::Revoked => write!(f, "key revoked"),
            KeyProblem::WrongRole(role) => write!(f, "key has the role {}", role.as_str()),
            KeyProblem::NotServing(pref) => write!(f, "key's centre does not serve prefecture {pref}"),
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
            let bad = |why: String| CoreError::Registry(format!("key {}: {why}", entry.key_id));
            let key = crypto::verifying_key(&entry.public_key).map_err(|e| bad(e.to_string()))?;
            let role = KeyRole::of_owner(&entry.owner).map_err(bad)?;
            if let Some(named) = entry.role.as_deref().filter(|r| *r != role.as_str()) {
                return Err(bad(format!("role {named:?}, but owner {:?} is {}", entry.owner, role.as_str())));
            }
            if let Some(p) = entry.prefectures.iter().find(|p| !is_prefecture(p)) {
                return Err(bad(format!("prefecture {p:?} is not 01-47")));
            }
            if role == KeyRole::Origin && !entry.prefectures.is_empty() {
                return Err(bad("an origin's key lists prefectures; only centres serve prefectures".into()));
            }
            let registered = RegisteredKey {
                owner: entry.owner,
                role,
                prefectures: entry.prefectures,
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
        self.usable_judged(key_id, owner, at, at)
    }

    /// The key `key_id` if it belongs to `owner`, was valid (not before, not after) at
    /// the time it claims to have signed (`signed_at`), and was not revoked at
    /// `trusted_at`: the receiving tier's own time, or the first centre's attested
    /// receive time. A stolen key revoked at R signs nothing new after R, whatever
    /// `signed_at` it writes.
    pub fn usable_judged(
        &self,
        key_id: &str,
        owner: &str,
        signed_at: u64,
        trusted_at: u64,
    ) -> std::result::Result<&RegisteredKey, KeyProblem> {
        let key = self.keys.get(key_id).ok_or(KeyProblem::Unknown)?;
        if key.owner != owner {
            return Err(KeyProblem::WrongOwner(key.owner.clone()));
        }
        if signed_at < key.not_before {
            return Err(KeyProblem::NotYetValid);
        }
        if key.revoked_at.is_some_and(|r| signed_at >= r || trusted_at >= r) {
            return Err(KeyProblem::Revoked);
        }
        if key.not_after.is_some_and(|n| signed_at >= n) {
            return Err(KeyProblem::Expired);
        }
        Ok(key)
    }

    /// The key `key_id` if it may attest a hop of a bundle from `prefecture`: a centre
    /// key of `centre` serving that prefecture, usable (as `usable_judged`) at its
    /// attested `received_at` and not revoked at `trusted_at`.
    pub fn attester(
        &self,
        key_id: &str,
        centre: &str,
        prefecture: &str,
        received_at: u64,
        trusted_at: u64,
    ) -> std::result::Result<&RegisteredKey, KeyProblem> {
        let key = self.usable_judged(key_id, centre, received_at, trusted_at)?;
        if key.role != KeyRole::Centre {
            return Err(KeyProblem::WrongRole(key.role));
        }
        if !key.prefectures.iter().any(|p| p == prefecture) {
            return Err(KeyProblem::NotServing(prefecture.into()));
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
            role: None,
            prefectures: vec![],
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
