//! One error type for the core; the bindings map each variant to one Python exception.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CoreError {
    /// Bytes that do not decode as the expected message.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A key or signature that is not usable (wrong length, weak key, bad signature).
    #[error("signature: {0}")]
    Signature(String),
    /// The key registry is unsigned, tampered or inconsistent.
    #[error("registry: {0}")]
    Registry(String),
    /// The LMDB store failed or was opened with bad options.
    #[error("store: {0}")]
    Store(String),
    /// A read below the retained change log (pruned after a checkpoint); the message
    /// names the archive that holds it.
    #[error("pruned: {0}")]
    Pruned(String),
    /// An operator action on quarantine that does not apply (unknown id, wrong state).
    #[error("quarantine: {0}")]
    Quarantine(String),
}

pub type Result<T> = std::result::Result<T, CoreError>;

impl From<heed::Error> for CoreError {
    fn from(e: heed::Error) -> Self {
        CoreError::Store(e.to_string())
    }
}

impl From<rmp_serde::decode::Error> for CoreError {
    fn from(e: rmp_serde::decode::Error) -> Self {
        CoreError::Malformed(e.to_string())
    }
}

impl From<rmp_serde::encode::Error> for CoreError {
    fn from(e: rmp_serde::encode::Error) -> Self {
        CoreError::Store(format!("encode: {e}"))
    }
}
