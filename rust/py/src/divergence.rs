//! The results of `Store.check` and `Store.reconcile`.

use jukisync_core::store;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::record::Record;

/// One record that differs between two stores.
#[pyclass(frozen, get_all, module = "jukisync._core")]
pub(crate) struct CodeDiff {
    code: String,
    newer: &'static str,
    a: Option<Py<Record>>,
    b: Option<Py<Record>>,
}

/// One origin whose chain head or records differ between two stores.
#[pyclass(frozen, get_all, module = "jukisync._core")]
pub(crate) struct OriginDiff {
    origin: String,
    a_head: Option<(u64, Py<PyBytes>)>,
    b_head: Option<(u64, Py<PyBytes>)>,
    codes: Vec<Py<CodeDiff>>,
}

/// What `Store.reconcile` found, and what it cost.
#[pyclass(frozen, get_all, module = "jukisync._core")]
pub(crate) struct Reconciliation {
    equal: bool,
    origins: Vec<Py<OriginDiff>>,
    nodes_compared: u64,
    records_read: u64,
}

fn head(py: Python<'_>, h: Option<(u64, [u8; 32])>) -> Option<(u64, Py<PyBytes>)> {
    h.map(|(seq, hash)| (seq, PyBytes::new(py, &hash).unbind()))
}

fn record(py: Python<'_>, raw: Option<Vec<u8>>) -> PyResult<Option<Py<Record>>> {
    Record::wrap(raw).map(|r| Py::new(py, r)).transpose()
}

pub(crate) fn reconciliation(py: Python<'_>, r: store::Reconciliation) -> PyResult<Reconciliation> {
    let mut origins = Vec::with_capacity(r.origins.len());
    for o in r.origins {
        let mut codes = Vec::with_capacity(o.codes.len());
        for c in o.codes {
            let diff = CodeDiff { code: c.code, newer: c.newer, a: record(py, c.a)?, b: record(py, c.b)? };
            codes.push(Py::new(py, diff)?);
        }
        let diff = OriginDiff { origin: o.origin, a_head: head(py, o.a_head), b_head: head(py, o.b_head), codes };
        origins.push(Py::new(py, diff)?);
    }
    Ok(Reconciliation {
        equal: origins.is_empty(),
        origins,
        nodes_compared: r.nodes_compared,
        records_read: r.records_read,
    })
}

#[pymethods]
impl Reconciliation {
    fn __repr__(&self) -> String {
        format!("Reconciliation(equal={}, origins={})", self.equal, self.origins.len())
    }
}
