//! Python bindings of jukisync-core, the module `jukisync._core`: extract arguments
//! while holding the GIL, release it around the work, convert errors in one place.

mod crypto;
mod divergence;
mod error;
mod queries;
mod record;
mod registry;
mod store;

use pyo3::prelude::*;

use error::{JukisyncError, MalformedError, PrunedError, QuarantineError, RegistryError, SignatureError, StoreError};
use record::Record;
use registry::KeyRegistry;
use store::{ApplyResult, QuarantineEntry, Store};

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("JukisyncError", py.get_type::<JukisyncError>())?;
    m.add("MalformedError", py.get_type::<MalformedError>())?;
    m.add("SignatureError", py.get_type::<SignatureError>())?;
    m.add("RegistryError", py.get_type::<RegistryError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("QuarantineError", py.get_type::<QuarantineError>())?;
    m.add("PrunedError", py.get_type::<PrunedError>())?;
    m.add_function(wrap_pyfunction!(crypto::generate_signing_key, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::public_key, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::sign, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::verify, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::sha256, m)?)?;
    m.add_function(wrap_pyfunction!(crypto::attestation_message, m)?)?;
    m.add_function(wrap_pyfunction!(queries::normalize_reading, m)?)?;
    m.add_function(wrap_pyfunction!(registry::key_role, m)?)?;
    m.add_function(wrap_pyfunction!(record::validate_update, m)?)?;
    m.add_function(wrap_pyfunction!(record::bundle_span, m)?)?;
    m.add_class::<KeyRegistry>()?;
    m.add_class::<ApplyResult>()?;
    m.add_class::<Record>()?;
    m.add_class::<QuarantineEntry>()?;
    m.add_class::<Store>()?;
    m.add_class::<divergence::CodeDiff>()?;
    m.add_class::<divergence::OriginDiff>()?;
    m.add_class::<divergence::Reconciliation>()?;
    queries::register(m)?;
    Ok(())
}
