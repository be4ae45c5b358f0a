//! The Python exception types and the one conversion of core errors into them.

use jukisync_core::CoreError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(_core, JukisyncError, PyException, "Root of every jukisync error.");
create_exception!(_core, MalformedError, JukisyncError, "Bytes that do not decode as the expected message.");
create_exception!(_core, SignatureError, JukisyncError, "An unusable key or signature.");
create_exception!(_core, RegistryError, JukisyncError, "A key registry that is unsigned, tampered or inconsistent.");
create_exception!(_core, StoreError, JukisyncError, "The LMDB store failed or was opened with bad options.");
create_exception!(
    _core,
    PrunedError,
    JukisyncError,
    "A read below the retained change log; the message names the archive holding it."
);
create_exception!(_core, QuarantineError, JukisyncError, "An operator action on quarantine that does not apply.");

/// The core's error on its way to Python (a local type, so it may convert to PyErr).
pub(crate) struct Error(pub(crate) CoreError);

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Error(e)
    }
}

impl From<Error> for PyErr {
    fn from(Error(e): Error) -> Self {
        let msg = e.to_string();
        match e {
            CoreError::Malformed(_) => MalformedError::new_err(msg),
            CoreError::Signature(_) => SignatureError::new_err(msg),
            CoreError::Registry(_) => RegistryError::new_err(msg),
            CoreError::Store(_) => StoreError::new_err(msg),
            CoreError::Pruned(_) => PrunedError::new_err(msg),
            CoreError::Quarantine(_) => QuarantineError::new_err(msg),
        }
    }
}

pub(crate) type Res<T> = Result<T, Error>;
