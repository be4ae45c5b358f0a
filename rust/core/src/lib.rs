//! jukisync core: the wire codec, Ed25519 signatures, the key registry and the LMDB
//! tier store. Pure Rust; the Python bindings live in `rust/py`.
#![deny(unsafe_code)]

pub mod answer;
pub mod audit;
pub mod audit_commit;
pub mod codes;
pub mod crypto;
pub mod error;
pub mod msgpack;
pub mod query;
pub mod record;
pub mod registry;
pub mod store;
pub mod text;
pub mod validate;
pub mod wire;

#[cfg(test)]
mod divergence_tests;
#[cfg(test)]
mod query_tests;
#[cfg(test)]
mod tests;

pub use error::{CoreError, Result};
