//! Key generation, signing and (batch) verification, hashing.

use jukisync_core::crypto;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::Res;

#[pyfunction]
pub(crate) fn generate_signing_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &crypto::generate_secret())
}

#[pyfunction]
pub(crate) fn public_key<'py>(py: Python<'py>, secret: &[u8]) -> Res<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &crypto::public_key(secret)?))
}

#[pyfunction]
pub(crate) fn sign<'py>(py: Python<'py>, secret: &[u8], message: &[u8]) -> Res<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &crypto::sign(secret, message)?))
}

#[pyfunction]
pub(crate) fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Res<bool> {
    let key = crypto::verifying_key(public_key)?;
    Ok(crypto::verify(&key, message, signature))
}

#[pyfunction]
pub(crate) fn verify_batch(
    py: Python<'_>,
    items: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
) -> Res<Vec<bool>> {
    // Bytes are borrowed while the GIL is held (extracting `Vec<u8>` from `bytes` would
    // go element by element), copied once, then verified with the GIL released.
    let owned: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> =
        items.iter().map(|(k, m, s)| (k.as_bytes().to_vec(), m.as_bytes().to_vec(), s.as_bytes().to_vec())).collect();
    // One answer per item: an item whose public key is not a usable point (or is
    // weak) is false, and the others are judged as they would be alone.
    Ok(py.detach(|| {
        let keys: Vec<Option<_>> = owned.iter().map(|(k, _, _)| crypto::verifying_key(k).ok()).collect();
        let checks: Vec<crypto::SigCheck<'_>> = owned
            .iter()
            .zip(&keys)
            .filter_map(|((_, message, sig), key)| key.map(|key| crypto::SigCheck { key, message, sig }))
            .collect();
        let mut verdicts = crypto::verify_batch(&checks).into_iter();
        keys.iter().map(|key| key.is_some() && verdicts.next().unwrap_or(false)).collect()
    }))
}

#[pyfunction]
pub(crate) fn sha256<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &crypto::sha256(data))
}

#[pyfunction]
pub(crate) fn attestation_message<'py>(
    py: Python<'py>,
    body_hash: &[u8],
    received_at: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let hash: [u8; 32] = body_hash.try_into().map_err(|_| PyValueError::new_err("body_hash must be 32 bytes"))?;
    Ok(PyBytes::new(py, &crypto::attestation_message(&hash, received_at)))
}
