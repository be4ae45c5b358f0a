//! Bindings of the purpose-bound queries and the audit trail (core: query.rs, audit.rs).
//! `Store`'s methods in lib.rs delegate here; everything runs with the GIL released.

use jukisync_core::audit::{self, EntryInfo};
use jukisync_core::query::{self, SearchQuery};
use jukisync_core::store::{self, Access};
use jukisync_core::{text, wire, CoreError};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::error::{Error, Res};
use crate::record::Record;
use crate::store::Store;

fn access(requester: String, task: String, time: Option<u64>, detail: String) -> Access {
    Access { time: time.unwrap_or_else(store::now_micros), requester, task, detail }
}

fn py_record(r: jukisync_core::record::Record) -> Res<Record> {
    Ok(Record::wrap(Some(wire::encode(&r)?)).expect("some in, some out"))
}

/// The answer to a lookup by code or by 個人番号.
#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct LookupResult {
    record: Option<Py<Record>>,
    redirected_from: Option<String>,
    audit_id: u64,
}

/// One candidate of a four-item search.
#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct Candidate {
    record: Py<Record>,
    score: f64,
    matched: &'static str,
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct SearchResult {
    candidates: Vec<Py<Candidate>>,
    total: usize,
    audit_id: u64,
}

/// A batch confirmation's answer as parallel arrays in request order.
#[pyclass(frozen, module = "jukisync._core")]
pub struct ConfirmResult {
    status: Py<PyBytes>,
    reason: Py<PyBytes>,
    changed_on: Py<PyBytes>,
    redirected: Vec<(u32, String)>,
    touched: usize,
    audit_id: u64,
}

#[pymethods]
impl ConfirmResult {
    /// One byte per code: 0 unknown, 1 current, 2 moved out, 3 removed.
    #[getter]
    fn status(&self, py: Python<'_>) -> Py<PyBytes> {
        self.status.clone_ref(py)
    }

    /// One byte per code: 0 none, else 1 + the index in `CONFIRM_REASONS`.
    #[getter]
    fn reason(&self, py: Python<'_>) -> Py<PyBytes> {
        self.reason.clone_ref(py)
    }

    /// Four bytes per code, little-endian u32 YYYYMMDD of the last change (0 unknown).
    #[getter]
    fn changed_on(&self, py: Python<'_>) -> Py<PyBytes> {
        self.changed_on.clone_ref(py)
    }

    /// Request index → the code the record lives under now, for changed codes.
    #[getter]
    fn redirected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (i, code) in &self.redirected {
            d.set_item(i, code)?;
        }
        Ok(d)
    }

    #[getter]
    fn touched(&self) -> usize {
        self.touched
    }

    #[getter]
    fn audit_id(&self) -> u64 {
        self.audit_id
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.status.bind(py).as_bytes().len()
    }

    /// How many codes have each status.
    fn counts(&self, py: Python<'_>) -> std::collections::HashMap<&'static str, usize> {
        let mut n = [0usize; 4];
        for s in self.status.bind(py).as_bytes() {
            n[usize::from(*s).min(3)] += 1;
        }
        [("unknown", n[0]), ("current", n[1]), ("moved_out", n[2]), ("removed", n[3])].into_iter().collect()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("ConfirmResult({} codes, audit_id={})", self.__len__(py), self.audit_id)
    }
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct AuditEntry {
    id: u64,
    time: u64,
    requester: String,
    task: String,
    kind: String,
    allowed: bool,
    reason: String,
    items: u64,
    touched: u64,
    codes: Option<Vec<String>>,
    detail: String,
}

impl From<EntryInfo> for AuditEntry {
    fn from(e: EntryInfo) -> Self {
        AuditEntry {
            id: e.id,
            time: e.time,
            requester: e.requester,
            task: e.task,
            kind: e.kind,
            allowed: e.allowed,
            reason: e.reason,
            items: e.items,
            touched: e.touched,
            codes: e.codes,
            detail: e.detail,
        }
    }
}

#[pymethods]
impl AuditEntry {
    fn __repr__(&self) -> String {
        let result = if self.allowed { "allowed".to_string() } else { format!("denied: {}", self.reason) };
        format!("AuditEntry({} at {} {} {} {} {result})", self.id, self.time, self.requester, self.task, self.kind)
    }
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct AuditVerification {
    ok: bool,
    entries: u64,
    first_id: u64,
    last_id: u64,
    head: Vec<u8>,
    problems: Vec<(u64, String)>,
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub struct PurgeResult {
    purged: u64,
    first_kept: u64,
    anchor: Vec<u8>,
    audit_id: u64,
}

/// Codes given as packed 11-byte bytes or as a sequence of str; a str that is not 11
/// bytes long becomes a placeholder that matches no record (answered unknown).
fn packed_codes(codes: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = codes.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let mut out = Vec::with_capacity(codes.len().unwrap_or(0) * audit::CODE_LEN);
    each_code(codes, |bytes| {
        out.extend_from_slice(if bytes.len() == audit::CODE_LEN { bytes } else { &[b'-'; audit::CODE_LEN] })
    })?;
    Ok(out)
}

/// Each code of a sequence (or any iterable) of str, as UTF-8 bytes borrowed from the
/// str: no `String` per code. One str is refused (it is not a list of codes).
pub(crate) fn each_code(codes: &Bound<'_, PyAny>, mut f: impl FnMut(&[u8])) -> PyResult<()> {
    if codes.cast::<PyString>().is_ok() {
        return Err(PyTypeError::new_err("codes: a sequence of str, not one str"));
    }
    let mut one = |item: &Bound<'_, PyAny>| -> PyResult<()> {
        let s = item.cast::<PyString>().map_err(|_| PyTypeError::new_err("codes: every code must be a str"))?;
        f(s.to_str()?.as_bytes());
        Ok(())
    };
    if let Ok(list) = codes.cast::<PyList>() {
        // A list's items directly: no iterator object, no reference count per step.
        for item in list.iter() {
            one(&item)?;
        }
        return Ok(());
    }
    for item in codes.try_iter()? {
        one(&item?)?;
    }
    Ok(())
}

pub fn lookup(
    s: &Store,
    py: Python<'_>,
    by_number: bool,
    key: String,
    a: (String, String, Option<u64>, String),
) -> Res<LookupResult> {
    let acc = access(a.0, a.1, a.2, a.3);
    let l = py.detach(|| if by_number { s.inner.lookup_number(&key, &acc) } else { s.inner.lookup(&key, &acc) })?;
    let record = l.record.map(py_record).transpose()?.map(|r| Py::new(py, r)).transpose().map_err(py_error)?;
    Ok(LookupResult { record, redirected_from: l.redirected_from, audit_id: l.audit_id })
}

/// A lookup answered as the service's encoded `Found` (core: answer.rs): the read, the
/// audit entry, the wait for its durable commit and the encoding all without the GIL,
/// and one bytes object out.
pub fn lookup_answer(
    s: &Store,
    py: Python<'_>,
    by_number: bool,
    key: String,
    fields: u16,
    a: (String, String, Option<u64>, String),
) -> Res<Py<PyBytes>> {
    let acc = access(a.0, a.1, a.2, a.3);
    let bytes = py.detach(|| s.inner.lookup_answer(by_number, &key, &acc, fields))?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

fn py_error(e: PyErr) -> Error {
    Error(CoreError::Store(e.to_string()))
}

pub fn search(
    s: &Store,
    py: Python<'_>,
    q: SearchQuery,
    a: (String, String, Option<u64>, String),
) -> Res<SearchResult> {
    let acc = access(a.0, a.1, a.2, a.3);
    let found = py.detach(|| s.inner.search(&q, &acc))?;
    let mut candidates = Vec::with_capacity(found.candidates.len());
    for c in found.candidates {
        let record = Py::new(py, py_record(c.record)?).map_err(py_error)?;
        let cand = Candidate { record, score: c.score, matched: c.matched.as_str() };
        candidates.push(Py::new(py, cand).map_err(py_error)?);
    }
    Ok(SearchResult { candidates, total: found.total, audit_id: found.audit_id })
}

pub fn confirm(
    s: &Store,
    py: Python<'_>,
    codes: &Bound<'_, PyAny>,
    a: (String, String, Option<u64>, String),
) -> PyResult<ConfirmResult> {
    let packed = packed_codes(codes)?;
    let acc = access(a.0, a.1, a.2, a.3);
    let (c, audit_id) = py.detach(|| s.inner.confirm(&packed, &acc)).map_err(Error::from)?;
    let dates: Vec<u8> = c.changed_on.iter().flat_map(|d| d.to_le_bytes()).collect();
    Ok(ConfirmResult {
        status: PyBytes::new(py, &c.status).unbind(),
        reason: PyBytes::new(py, &c.reason).unbind(),
        changed_on: PyBytes::new(py, &dates).unbind(),
        redirected: c.redirected,
        touched: c.touched.len() / audit::CODE_LEN,
        audit_id,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn audit_log(
    s: &Store,
    py: Python<'_>,
    kind: String,
    allowed: bool,
    reason: String,
    items: u64,
    codes: Vec<String>,
    a: (String, String, Option<u64>, String),
) -> Res<u64> {
    let acc = access(a.0, a.1, a.2, a.3);
    let event = audit::Event {
        time: acc.time,
        requester: acc.requester,
        task: acc.task,
        kind,
        allowed,
        reason,
        items,
        detail: acc.detail,
    };
    Ok(py.detach(|| s.inner.audit_log(event, &codes))?)
}

pub fn entries(list: Vec<EntryInfo>) -> Vec<AuditEntry> {
    list.into_iter().map(AuditEntry::from).collect()
}

pub fn verification(v: audit::Verification) -> AuditVerification {
    AuditVerification {
        ok: v.ok,
        entries: v.entries,
        first_id: v.first_id,
        last_id: v.last_id,
        head: v.head.to_vec(),
        problems: v.problems,
    }
}

pub fn purge(p: audit::Purge) -> PurgeResult {
    PurgeResult { purged: p.purged, first_kept: p.first_kept, anchor: p.anchor.to_vec(), audit_id: p.entry_id }
}

pub fn checkpoints(list: Option<Vec<(u64, Vec<u8>)>>) -> PyResult<Vec<(u64, [u8; 32])>> {
    list.unwrap_or_default()
        .into_iter()
        .map(|(id, h)| {
            let hash: [u8; 32] = h.try_into().map_err(|_| {
                pyo3::exceptions::PyValueError::new_err(format!("checkpoint {id}: hash must be 32 bytes"))
            })?;
            Ok((id, hash))
        })
        .collect()
}

pub fn search_query(name: String, birth_date: String, sex: u8, address: Option<String>, limit: usize) -> SearchQuery {
    SearchQuery { name, birth_date, sex, address, limit }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("CONFIRM_REASONS", pyo3::types::PyTuple::new(m.py(), query::REASONS)?)?;
    m.add("ANSWER_FIELDS", pyo3::types::PyTuple::new(m.py(), jukisync_core::answer::ANSWER_FIELDS)?)?;
    m.add_class::<LookupResult>()?;
    m.add_class::<Candidate>()?;
    m.add_class::<SearchResult>()?;
    m.add_class::<ConfirmResult>()?;
    m.add_class::<AuditEntry>()?;
    m.add_class::<AuditVerification>()?;
    m.add_class::<PurgeResult>()?;
    Ok(())
}

#[pyfunction]
pub(crate) fn normalize_reading(text: &str) -> String {
    text::normalize_reading(text)
}
