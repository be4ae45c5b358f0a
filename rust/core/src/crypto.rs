//! Ed25519 signatures and SHA-256 hashes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts`, without copying them into one buffer.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

pub fn generate_secret() -> [u8; 32] {
    SigningKey::generate(&mut OsRng).to_bytes()
}

pub fn signing_key(secret: &[u8]) -> Result<SigningKey> {
    let seed: [u8; 32] = secret
        .try_into()
        .map_err(|_| CoreError::Signature(format!("secret key must be 32 bytes, got {}", secret.len())))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn public_key(secret: &[u8]) -> Result<[u8; 32]> {
    Ok(signing_key(secret)?.verifying_key().to_bytes())
}

pub fn sign(secret: &[u8], message: &[u8]) -> Result<[u8; 64]> {
    Ok(signing_key(secret)?.sign(message).to_bytes())
}

/// Parse a public key, refusing weak (small-order) keys: with one, a signature could
/// verify for many messages.
pub fn verifying_key(public: &[u8]) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = public
        .try_into()
        .map_err(|_| CoreError::Signature(format!("public key must be 32 bytes, got {}", public.len())))?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| CoreError::Signature(e.to_string()))?;
    if key.is_weak() {
        return Err(CoreError::Signature("weak public key".into()));
    }
    Ok(key)
}

pub fn parse_signature(sig: &[u8]) -> Option<Signature> {
    Signature::from_slice(sig).ok()
}

/// One rule for every signature, alone or in a batch: ZIP-215 (the cofactored equation
/// `[8][s]B = [8]R + [8][k]A`, `s` canonical), as `ed25519-zebra` implements it. Batch
/// verification is only sound with the cofactored equation; checking single signatures
/// by another rule (dalek's `verify_strict`) let a small-order component in R pass in a
/// batch and fail alone, so two tiers could disagree about one bundle.
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &[u8]) -> bool {
    zebra_item(key, message, sig).is_some_and(|item| item.verify_single().is_ok())
}

fn zebra_item(key: &VerifyingKey, message: &[u8], sig: &[u8]) -> Option<ed25519_zebra::batch::Item> {
    let sig: [u8; 64] = sig.try_into().ok()?;
    let key = ed25519_zebra::VerificationKeyBytes::from(key.to_bytes());
    Some(ed25519_zebra::batch::Item::from((key, ed25519_zebra::Signature::from_bytes(&sig), message)))
}

/// One signature to check in a batch.
pub struct SigCheck<'a> {
    pub key: VerifyingKey,
    pub message: &'a [u8],
    pub sig: &'a [u8],
}

/// Verify many signatures at once. Batch verification is much cheaper per signature;
/// when the batch fails, each is re-checked alone so one forgery does not condemn the
/// genuine ones beside it. A signature is accepted here exactly when `verify` accepts
/// it (both use ZIP-215), whatever else is in the batch.
pub fn verify_batch(checks: &[SigCheck<'_>]) -> Vec<bool> {
    let items: Vec<Option<ed25519_zebra::batch::Item>> =
        checks.iter().map(|c| zebra_item(&c.key, c.message, c.sig)).collect();
    if checks.len() > 1 && items.iter().all(Option::is_some) {
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for item in items.iter().flatten() {
            batch.queue(item.clone());
        }
        if batch.verify(OsRng).is_ok() {
            return vec![true; checks.len()];
        }
    }
    items.into_iter().map(|item| item.is_some_and(|i| i.verify_single().is_ok())).collect()
}

/// What a centre signs to attest a hop: SHA-256(body) ‖ received_at (u64 big-endian).
pub fn attestation_message(body_hash: &[u8; 32], received_at: u64) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..32].copy_from_slice(body_hash);
    out[32..].copy_from_slice(&received_at.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let secret = generate_secret();
        let key = verifying_key(&public_key(&secret).unwrap()).unwrap();
        let sig = sign(&secret, b"bundle").unwrap();
        assert!(verify(&key, b"bundle", &sig));
        assert!(!verify(&key, b"bundlf", &sig));
        assert!(!verify(&key, b"bundle", &sig[..63]));
    }

    #[test]
    fn batch_falls_back_to_single_checks() {
        let secrets: Vec<[u8; 32]> = (0..8).map(|_| generate_secret()).collect();
        let msgs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100]).collect();
        let mut sigs: Vec<[u8; 64]> = secrets.iter().zip(&msgs).map(|(s, m)| sign(s, m).unwrap()).collect();
        sigs[3][5] ^= 1;
        let checks: Vec<SigCheck<'_>> = secrets
            .iter()
            .zip(&msgs)
            .zip(&sigs)
            .map(|((s, m), sig)| SigCheck { key: verifying_key(&public_key(s).unwrap()).unwrap(), message: m, sig })
            .collect();
        let ok = verify_batch(&checks);
        assert_eq!(ok, vec![true, true, true, false, true, true, true, true]);
        let good: Vec<SigCheck<'_>> = checks.into_iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, c)| c).collect();
        assert!(verify_batch(&good).iter().all(|b| *b));
    }

    /// A signature whose R carries a small-order component T: R = rB + T, s = r + k·a
    /// with k = H(R ‖ A ‖ M). The cofactored equation accepts it; the uncofactored one
    /// (dalek's `verify_strict`) refuses it, and a random-linear-combination batch
    /// accepted it when T vanished under the batch's coefficient. Both paths must agree.
    fn torsion_signature(seed: &[u8; 32], message: &[u8], torsion: usize, nonce: u64) -> [u8; 64] {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::Sha512;
        let h = Sha512::digest(seed);
        let mut a_bytes: [u8; 32] = h[..32].try_into().unwrap();
        a_bytes[0] &= 248;
        a_bytes[31] &= 127;
        a_bytes[31] |= 64;
        let a = Scalar::from_bytes_mod_order(a_bytes);
        let public = (ED25519_BASEPOINT_POINT * a).compress();
        assert_eq!(public.to_bytes(), public_key(seed).unwrap());
        let r = Scalar::from(nonce) + Scalar::from_bytes_mod_order(h[32..].try_into().unwrap());
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[torsion]).compress();
        let k = Scalar::from_hash(
            Sha512::new().chain_update(big_r.as_bytes()).chain_update(public.as_bytes()).chain_update(message),
        );
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    #[test]
    fn single_and_batch_verification_agree_on_torsion_signatures() {
        let seeds: Vec<[u8; 32]> = (0..4).map(|_| generate_secret()).collect();
        for torsion in 0..8 {
            for nonce in 0..8u64 {
                let msg = format!("bundle {torsion} {nonce}").into_bytes();
                let odd = torsion_signature(&seeds[0], &msg, torsion, nonce);
                let key = verifying_key(&public_key(&seeds[0]).unwrap()).unwrap();
                let alone = verify(&key, &msg, &odd);
                assert!(alone, "ZIP-215 accepts a small-order component in R (torsion {torsion})");
                // in batches with honest signatures of other keys, in every position
                let honest: Vec<(VerifyingKey, Vec<u8>, [u8; 64])> = seeds[1..]
                    .iter()
                    .map(|s| {
                        let m = b"other origin".to_vec();
                        (verifying_key(&public_key(s).unwrap()).unwrap(), m.clone(), sign(s, &m).unwrap())
                    })
                    .collect();
                for at in 0..=honest.len() {
                    let mut checks: Vec<SigCheck<'_>> =
                        honest.iter().map(|(k, m, s)| SigCheck { key: *k, message: m, sig: s }).collect();
                    checks.insert(at, SigCheck { key, message: &msg, sig: &odd });
                    let batch = verify_batch(&checks);
                    let single: Vec<bool> = checks.iter().map(|c| verify(&c.key, c.message, c.sig)).collect();
                    assert_eq!(batch, single, "torsion {torsion} nonce {nonce} at {at}");
                }
                // and a torsion signature over another message is refused by both
                let wrong =
                    [SigCheck { key, message: b"other", sig: &odd }, SigCheck { key, message: &msg, sig: &odd }];
                assert_eq!(verify_batch(&wrong), vec![false, true]);
            }
        }
    }

    #[test]
    fn rejects_bad_key_lengths() {
        assert!(signing_key(&[0u8; 31]).is_err());
        assert!(verifying_key(&[0u8; 33]).is_err());
        // the identity point is a weak key
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(verifying_key(&identity).is_err());
    }
}
