//! The key registry, loaded and checked against the root key.

use jukisync_core::registry::{KeyRole, Registry};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::Res;

#[pyclass(frozen, module = "jukisync._core")]
pub(crate) struct KeyRegistry {
    pub(crate) inner: Registry,
}

#[pymethods]
impl KeyRegistry {
    #[new]
    fn new(signed_registry: &[u8], root_public_key: &[u8]) -> Res<Self> {
        Ok(KeyRegistry { inner: Registry::load(signed_registry, root_public_key)? })
    }

    #[getter]
    fn version(&self) -> u64 {
        self.inner.version
    }

    fn owners(&self) -> Vec<String> {
        self.inner.owners()
    }

    fn key_for<'py>(&self, py: Python<'py>, key_id: &str) -> Option<(String, Bound<'py, PyBytes>)> {
        self.inner.key(key_id).map(|k| (k.owner.clone(), PyBytes::new(py, k.key.as_bytes())))
    }

    /// (role, prefectures) of a key id, or None.
    fn role_of(&self, key_id: &str) -> Option<(&'static str, Vec<String>)> {
        self.inner.key(key_id).map(|k| (k.role.as_str(), k.prefectures.clone()))
    }

    fn valid_at(&self, key_id: &str, owner: &str, at: u64) -> bool {
        self.inner.usable(key_id, owner, at).is_ok()
    }
}

/// The role an owner name implies ("origin" for a valid local government code,
/// "centre" for a centre id); ValueError for anything else. The registry's one rule.
#[pyfunction]
pub(crate) fn key_role(owner: &str) -> PyResult<&'static str> {
    KeyRole::of_owner(owner).map(KeyRole::as_str).map_err(PyValueError::new_err)
}
