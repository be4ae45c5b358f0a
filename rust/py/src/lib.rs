//! Python bindings of jukisync-core, the module `jukisync._core`: extract arguments
//! while holding the GIL, release it around the work, convert errors in one place.

use std::path::PathBuf;

mod queries;

use jukisync_core::record::{self, FieldValue, RecordView};
use jukisync_core::registry::Registry;
use jukisync_core::store::{self, Centre, Outcome, Role, StoreOptions};
use jukisync_core::{crypto, text, CoreError};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(_core, JukisyncError, PyException, "Root of every jukisync error.");
create_exception!(_core, MalformedError, JukisyncError, "Bytes that do not decode as the expected message.");
create_exception!(_core, SignatureError, JukisyncError, "An unusable key or signature.");
create_exception!(_core, RegistryError, JukisyncError, "A key registry that is unsigned, tampered or inconsistent.");
create_exception!(_core, StoreError, JukisyncError, "The LMDB store failed or was opened with bad options.");
create_exception!(_core, QuarantineError, JukisyncError, "An operator action on quarantine that does not apply.");

/// The core's error on its way to Python (a local type, so it may convert to PyErr).
struct Error(CoreError);

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
            CoreError::Quarantine(_) => QuarantineError::new_err(msg),
        }
    }
}

type Res<T> = Result<T, Error>;

// ---- crypto ----------------------------------------------------------------------------

#[pyfunction]
fn generate_signing_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &crypto::generate_secret())
}

#[pyfunction]
fn public_key<'py>(py: Python<'py>, secret: &[u8]) -> Res<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &crypto::public_key(secret)?))
}

#[pyfunction]
fn sign<'py>(py: Python<'py>, secret: &[u8], message: &[u8]) -> Res<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &crypto::sign(secret, message)?))
}

#[pyfunction]
fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Res<bool> {
    let key = crypto::verifying_key(public_key)?;
    Ok(crypto::verify(&key, message, signature))
}

#[pyfunction]
fn verify_batch(
    py: Python<'_>,
    items: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
) -> Res<Vec<bool>> {
    // Bytes are borrowed while the GIL is held (extracting `Vec<u8>` from `bytes` would
    // go element by element), copied once, then verified with the GIL released.
    let owned: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> =
        items.iter().map(|(k, m, s)| (k.as_bytes().to_vec(), m.as_bytes().to_vec(), s.as_bytes().to_vec())).collect();
    py.detach(|| {
        let keys = owned.iter().map(|(k, _, _)| crypto::verifying_key(k)).collect::<Result<Vec<_>, _>>()?;
        let checks: Vec<crypto::SigCheck<'_>> =
            owned.iter().zip(keys).map(|((_, message, sig), key)| crypto::SigCheck { key, message, sig }).collect();
        Ok(crypto::verify_batch(&checks))
    })
}

#[pyfunction]
fn sha256<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &crypto::sha256(data))
}

#[pyfunction]
fn attestation_message<'py>(py: Python<'py>, body_hash: &[u8], received_at: u64) -> PyResult<Bound<'py, PyBytes>> {
    let hash: [u8; 32] = body_hash.try_into().map_err(|_| PyValueError::new_err("body_hash must be 32 bytes"))?;
    Ok(PyBytes::new(py, &crypto::attestation_message(&hash, received_at)))
}

#[pyfunction]
fn normalize_reading(text: &str) -> String {
    text::normalize_reading(text)
}

// ---- registry ----------------------------------------------------------------------------

#[pyclass(frozen, module = "jukisync._core")]
struct KeyRegistry {
    inner: Registry,
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

    fn valid_at(&self, key_id: &str, owner: &str, at: u64) -> bool {
        self.inner.usable(key_id, owner, at).is_ok()
    }
}

// ---- results -----------------------------------------------------------------------------

#[pyclass(frozen, get_all, module = "jukisync._core")]
struct ApplyResult {
    status: &'static str,
    origin: Option<String>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    hash: Option<Vec<u8>>,
    updates: usize,
    reason: Option<String>,
    kind: Option<&'static str>,
    resend_from: Option<u64>,
    quarantine_id: Option<u64>,
    released: usize,
}

impl From<Outcome> for ApplyResult {
    fn from(o: Outcome) -> Self {
        ApplyResult {
            status: o.status.as_str(),
            origin: o.origin,
            first_seq: o.first_seq,
            last_seq: o.last_seq,
            hash: o.hash.map(|h| h.to_vec()),
            updates: o.updates,
            reason: o.reason,
            kind: o.kind.map(store::RejectKind::as_str),
            resend_from: o.resend_from,
            quarantine_id: o.quarantine_id,
            released: o.released,
        }
    }
}

#[pymethods]
impl ApplyResult {
    fn __repr__(&self) -> String {
        format!(
            "ApplyResult(status={:?}, origin={:?}, seqs={:?}..{:?}, reason={:?})",
            self.status, self.origin, self.first_seq, self.last_seq, self.reason
        )
    }
}

/// One identity record: the stored bytes, read in place on field access (only the
/// wanted field is decoded), so `get_many` of many records builds one small object per
/// record and a status check reads one field.
#[pyclass(frozen, module = "jukisync._core")]
struct Record {
    raw: Vec<u8>,
}

impl Record {
    fn view(&self) -> Res<RecordView<'_>> {
        Ok(RecordView::decode(&self.raw)?)
    }

    fn wrap(raw: Option<Vec<u8>>) -> Option<Record> {
        raw.map(|raw| Record { raw })
    }

    fn field(&self, name: &str) -> Res<FieldValue<'_>> {
        Ok(record::field(&self.raw, name)?)
    }

    fn text(&self, name: &str) -> Res<&str> {
        match self.field(name)? {
            FieldValue::Str(s) => Ok(s),
            other => Err(Error(CoreError::Malformed(format!("stored record: {name} is {other:?}")))),
        }
    }

    fn optional_text(&self, name: &str) -> Res<Option<&str>> {
        match self.field(name)? {
            FieldValue::Nil => Ok(None),
            _ => self.text(name).map(Some),
        }
    }

    fn number(&self, name: &str) -> Res<u64> {
        match self.field(name)? {
            FieldValue::UInt(n) => Ok(n),
            other => Err(Error(CoreError::Malformed(format!("stored record: {name} is {other:?}")))),
        }
    }
}

#[pymethods]
impl Record {
    #[getter]
    fn juminhyo_code(&self) -> Res<&str> {
        self.text("juminhyo_code")
    }
    #[getter]
    fn status(&self) -> Res<&str> {
        self.text("status")
    }
    #[getter]
    fn redirect_to(&self) -> Res<Option<&str>> {
        self.optional_text("redirect_to")
    }
    #[getter]
    fn kojin_bango(&self) -> Res<&str> {
        self.text("kojin_bango")
    }
    #[getter]
    fn name(&self) -> Res<&str> {
        self.text("name")
    }
    #[getter]
    fn name_kana(&self) -> Res<&str> {
        self.text("name_kana")
    }
    #[getter]
    fn former_surname(&self) -> Res<Option<&str>> {
        self.optional_text("former_surname")
    }
    #[getter]
    fn alias(&self) -> Res<Option<&str>> {
        self.optional_text("alias")
    }
    #[getter]
    fn birth_date(&self) -> Res<&str> {
        self.text("birth_date")
    }
    #[getter]
    fn sex(&self) -> Res<u8> {
        u8::try_from(self.number("sex")?)
            .map_err(|_| Error(CoreError::Malformed("stored record: sex out of range".into())))
    }
    #[getter]
    fn address(&self) -> Res<&str> {
        self.text("address")
    }
    #[getter]
    fn municipality(&self) -> Res<&str> {
        self.text("municipality")
    }
    #[getter]
    fn reason(&self) -> Res<&str> {
        self.text("reason")
    }
    #[getter]
    fn changed_on(&self) -> Res<&str> {
        self.text("changed_on")
    }
    #[getter]
    fn recorded_at(&self) -> Res<u64> {
        self.number("recorded_at")
    }
    #[getter]
    fn origin(&self) -> Res<&str> {
        self.text("origin")
    }
    #[getter]
    fn seq(&self) -> Res<u64> {
        self.number("seq")
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let r = self.view()?;
        let d = PyDict::new(py);
        d.set_item("juminhyo_code", r.juminhyo_code)?;
        d.set_item("status", r.status)?;
        d.set_item("redirect_to", r.redirect_to)?;
        d.set_item("kojin_bango", r.kojin_bango)?;
        d.set_item("name", r.name)?;
        d.set_item("name_kana", r.name_kana)?;
        d.set_item("former_surname", r.former_surname)?;
        d.set_item("alias", r.alias)?;
        d.set_item("birth_date", r.birth_date)?;
        d.set_item("sex", r.sex)?;
        d.set_item("address", r.address)?;
        d.set_item("municipality", r.municipality)?;
        d.set_item("reason", r.reason)?;
        d.set_item("changed_on", r.changed_on)?;
        d.set_item("recorded_at", r.recorded_at)?;
        d.set_item("origin", r.origin)?;
        d.set_item("seq", r.seq)?;
        Ok(d)
    }

    fn __repr__(&self) -> Res<String> {
        let r = self.view()?;
        Ok(format!("Record({} {} {} {})", r.juminhyo_code, r.status, r.name, r.municipality))
    }
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
struct QuarantineEntry {
    id: u64,
    received_at: u64,
    kind: &'static str,
    reason: String,
    origin: Option<String>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    hash: Option<Vec<u8>>,
    state: String,
    size: u64,
    envelope: Vec<u8>,
}

impl From<store::QuarantineEntry> for QuarantineEntry {
    fn from(e: store::QuarantineEntry) -> Self {
        QuarantineEntry {
            id: e.id,
            received_at: e.received_at,
            kind: e.kind.as_str(),
            reason: e.reason,
            origin: e.origin,
            first_seq: e.first_seq,
            last_seq: e.last_seq,
            hash: e.hash.map(|h| h.into_vec()),
            state: e.state,
            size: e.size,
            envelope: e.envelope.into_vec(),
        }
    }
}

// ---- store -------------------------------------------------------------------------------

#[pyclass(frozen, module = "jukisync._core")]
struct Store {
    inner: store::Store,
    path: String,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Aggregator => "aggregator",
        Role::National => "national",
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (
        path, *, role, registry, centre_id=None, centre_key=None, centre_key_id=None,
        map_size=1 << 34, max_bundle_bytes=8 << 20, pending_limit=10_000, require_attestation=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        role: &str,
        registry: &KeyRegistry,
        centre_id: Option<String>,
        centre_key: Option<Vec<u8>>,
        centre_key_id: Option<String>,
        map_size: usize,
        max_bundle_bytes: usize,
        pending_limit: usize,
        require_attestation: Option<bool>,
    ) -> PyResult<Self> {
        let role = match role {
            "aggregator" => Role::Aggregator,
            "national" => Role::National,
            other => {
                return Err(PyValueError::new_err(format!("role must be 'aggregator' or 'national', not {other:?}")))
            }
        };
        let centre = match (centre_id, centre_key, centre_key_id) {
            (Some(id), Some(key), Some(key_id)) => {
                Some(Centre { id, key_id, key: crypto::signing_key(&key).map_err(Error::from)? })
            }
            (None, None, None) => None,
            _ => return Err(PyValueError::new_err("centre_id, centre_key and centre_key_id go together")),
        };
        let opts = StoreOptions {
            role,
            centre,
            map_size,
            max_bundle_bytes,
            pending_limit,
            require_attestation: require_attestation.unwrap_or(role == Role::National),
        };
        let registry = registry.inner.clone();
        let display = path.display().to_string();
        let inner = py.detach(|| store::Store::open(&path, registry, opts)).map_err(Error::from)?;
        Ok(Store { inner, path: display })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn role(&self) -> &'static str {
        role_name(self.inner.role())
    }

    fn set_registry(&self, registry: &KeyRegistry) {
        self.inner.set_registry(registry.inner.clone());
    }

    #[pyo3(signature = (envelopes, received_at=None))]
    fn apply(
        &self,
        py: Python<'_>,
        envelopes: Vec<Bound<'_, PyBytes>>,
        received_at: Option<u64>,
    ) -> Res<Vec<ApplyResult>> {
        let owned: Vec<Vec<u8>> = envelopes.iter().map(|b| b.as_bytes().to_vec()).collect();
        let received_at = received_at.unwrap_or_else(store::now_micros);
        let outcomes = py.detach(|| {
            let raws: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            self.inner.apply(&raws, received_at)
        })?;
        Ok(outcomes.into_iter().map(ApplyResult::from).collect())
    }

    fn get(&self, py: Python<'_>, code: String) -> Res<Option<Record>> {
        let mut raw = py.detach(|| self.inner.get_many_raw(std::slice::from_ref(&code)))?;
        Ok(Record::wrap(raw.pop().flatten()))
    }

    fn get_many(&self, py: Python<'_>, codes: Vec<String>) -> Res<Vec<Option<Record>>> {
        let raws = py.detach(|| self.inner.get_many_raw(&codes))?;
        Ok(raws.into_iter().map(Record::wrap).collect())
    }

    fn by_number(&self, py: Python<'_>, kojin_bango: &str) -> Res<Option<Record>> {
        Ok(Record::wrap(py.detach(|| self.inner.by_number_raw(kojin_bango))?))
    }

    fn chain_head<'py>(&self, py: Python<'py>, origin: &str) -> Res<Option<(u64, Bound<'py, PyBytes>)>> {
        let head = py.detach(|| self.inner.chain_head(origin))?;
        Ok(head.map(|(seq, hash)| (seq, PyBytes::new(py, &hash))))
    }

    fn chain_heads<'py>(&self, py: Python<'py>) -> Res<Bound<'py, PyDict>> {
        let heads = py.detach(|| self.inner.chain_heads())?;
        let d = PyDict::new(py);
        for (origin, seq, hash) in heads {
            d.set_item(origin, (seq, PyBytes::new(py, &hash))).map_err(|e| Error(CoreError::Store(e.to_string())))?;
        }
        Ok(d)
    }

    #[pyo3(signature = (origin, from_seq, limit=1000))]
    fn changes<'py>(
        &self,
        py: Python<'py>,
        origin: &str,
        from_seq: u64,
        limit: usize,
    ) -> Res<Vec<Bound<'py, PyBytes>>> {
        let changes = py.detach(|| self.inner.changes(origin, from_seq, limit))?;
        Ok(changes.iter().map(|c| PyBytes::new(py, c)).collect())
    }

    #[pyo3(signature = (municipality_prefix=""))]
    fn digest(&self, py: Python<'_>, municipality_prefix: &str) -> Res<String> {
        Ok(py.detach(|| self.inner.digest(municipality_prefix))?)
    }

    fn stats(&self, py: Python<'_>) -> Res<std::collections::HashMap<String, u64>> {
        Ok(py.detach(|| self.inner.stats())?.into_iter().collect())
    }

    #[pyo3(signature = (limit=1000))]
    fn forward_batch<'py>(&self, py: Python<'py>, limit: usize) -> Res<Vec<(u64, Bound<'py, PyBytes>)>> {
        let batch = py.detach(|| self.inner.forward_batch(limit))?;
        Ok(batch.iter().map(|(id, b)| (*id, PyBytes::new(py, b))).collect())
    }

    fn forward_done(&self, py: Python<'_>, ids: Vec<u64>) -> Res<()> {
        Ok(py.detach(|| self.inner.forward_done(&ids))?)
    }

    #[pyo3(signature = (include_closed=false))]
    fn quarantine(&self, py: Python<'_>, include_closed: bool) -> Res<Vec<QuarantineEntry>> {
        let list = py.detach(|| self.inner.quarantine_list(include_closed))?;
        Ok(list.into_iter().map(QuarantineEntry::from).collect())
    }

    fn quarantine_entry(&self, py: Python<'_>, id: u64) -> Res<QuarantineEntry> {
        Ok(py.detach(|| self.inner.quarantine_entry(id))?.into())
    }

    fn release(&self, py: Python<'_>, id: u64) -> Res<ApplyResult> {
        Ok(py.detach(|| self.inner.release(id, store::now_micros()))?.into())
    }

    fn drop(&self, py: Python<'_>, id: u64) -> Res<()> {
        Ok(py.detach(|| self.inner.drop_entry(id))?)
    }

    fn halted(&self, py: Python<'_>) -> Res<std::collections::HashMap<String, String>> {
        Ok(py.detach(|| self.inner.halted())?.into_iter().collect())
    }

    fn pending(&self, py: Python<'_>, origin: &str) -> Res<Vec<(u64, u64)>> {
        Ok(py.detach(|| self.inner.pending(origin))?)
    }

    // ---- purpose-bound queries and the audit trail (queries.rs) ----------------------

    /// Look up a record by 住民票コード (following code changes), audited.
    #[pyo3(signature = (code, *, requester, task, time=None, detail=""))]
    fn lookup(
        &self,
        py: Python<'_>,
        code: String,
        requester: String,
        task: String,
        time: Option<u64>,
        detail: &str,
    ) -> Res<queries::LookupResult> {
        queries::lookup(self, py, false, code, (requester, task, time, detail.to_string()))
    }

    /// Look up a record by 個人番号, audited.
    #[pyo3(signature = (kojin_bango, *, requester, task, time=None, detail=""))]
    fn lookup_number(
        &self,
        py: Python<'_>,
        kojin_bango: String,
        requester: String,
        task: String,
        time: Option<u64>,
        detail: &str,
    ) -> Res<queries::LookupResult> {
        queries::lookup(self, py, true, kojin_bango, (requester, task, time, detail.to_string()))
    }

    /// The four-item search, audited.
    #[pyo3(signature = (
        name, birth_date, sex, address=None, *, requester, task, limit=20, time=None, detail=""
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        name: String,
        birth_date: String,
        sex: u8,
        address: Option<String>,
        requester: String,
        task: String,
        limit: usize,
        time: Option<u64>,
        detail: &str,
    ) -> Res<queries::SearchResult> {
        let q = queries::search_query(name, birth_date, sex, address, limit);
        queries::search(self, py, q, (requester, task, time, detail.to_string()))
    }

    /// Batch confirmation (一括提供) of many codes in one call, audited as one entry.
    #[pyo3(signature = (codes, *, requester, task, time=None, detail=""))]
    fn confirm(
        &self,
        py: Python<'_>,
        codes: &Bound<'_, PyAny>,
        requester: String,
        task: String,
        time: Option<u64>,
        detail: &str,
    ) -> PyResult<queries::ConfirmResult> {
        queries::confirm(self, py, codes, (requester, task, time, detail.to_string()))
    }

    #[pyo3(signature = (
        kind, *, requester, task, allowed, reason="", items=1, codes=Vec::new(), time=None,
        detail=""
    ))]
    #[allow(clippy::too_many_arguments)]
    fn audit_log(
        &self,
        py: Python<'_>,
        kind: String,
        requester: String,
        task: String,
        allowed: bool,
        reason: &str,
        items: u64,
        codes: Vec<String>,
        time: Option<u64>,
        detail: &str,
    ) -> Res<u64> {
        queries::audit_log(
            self,
            py,
            kind,
            allowed,
            reason.to_string(),
            items,
            codes,
            (requester, task, time, detail.to_string()),
        )
    }

    #[pyo3(signature = (start=None, end=None, *, with_codes=false))]
    fn audit_entries(
        &self,
        py: Python<'_>,
        start: Option<u64>,
        end: Option<u64>,
        with_codes: bool,
    ) -> Res<Vec<queries::AuditEntry>> {
        let list = py.detach(|| self.inner.audit_entries(start.unwrap_or(0), end.unwrap_or(u64::MAX), with_codes))?;
        Ok(queries::entries(list))
    }

    #[pyo3(signature = (id, *, with_codes=false))]
    fn audit_entry(&self, py: Python<'_>, id: u64, with_codes: bool) -> Res<Option<queries::AuditEntry>> {
        Ok(py.detach(|| self.inner.audit_entry(id, with_codes))?.map(queries::AuditEntry::from))
    }

    fn audit_touching(&self, py: Python<'_>, code: String) -> Res<Vec<queries::AuditEntry>> {
        Ok(queries::entries(py.detach(|| self.inner.audit_touching(&code))?))
    }

    #[pyo3(signature = (checkpoints=None))]
    fn audit_verify(
        &self,
        py: Python<'_>,
        checkpoints: Option<Vec<(u64, Vec<u8>)>>,
    ) -> PyResult<queries::AuditVerification> {
        let checkpoints = queries::checkpoints(checkpoints)?;
        Ok(queries::verification(py.detach(|| self.inner.audit_verify(&checkpoints)).map_err(Error::from)?))
    }

    #[pyo3(signature = (before, *, requester, task, time=None, detail=""))]
    fn audit_purge(
        &self,
        py: Python<'_>,
        before: u64,
        requester: String,
        task: String,
        time: Option<u64>,
        detail: &str,
    ) -> Res<queries::PurgeResult> {
        let acc =
            store::Access { time: time.unwrap_or_else(store::now_micros), requester, task, detail: detail.to_string() };
        Ok(queries::purge(py.detach(|| self.inner.audit_purge(before, &acc))?))
    }

    fn audit_head<'py>(&self, py: Python<'py>) -> Res<(u64, u64, Bound<'py, PyBytes>)> {
        let (first, last, hash) = py.detach(|| self.inner.audit_head())?;
        Ok((first, last, PyBytes::new(py, &hash)))
    }

    fn __repr__(&self) -> String {
        format!("Store({:?}, role={:?})", self.path, role_name(self.inner.role()))
    }
}

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
    m.add_function(wrap_pyfunction!(generate_signing_key, m)?)?;
    m.add_function(wrap_pyfunction!(public_key, m)?)?;
    m.add_function(wrap_pyfunction!(sign, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(sha256, m)?)?;
    m.add_function(wrap_pyfunction!(attestation_message, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_reading, m)?)?;
    m.add_class::<KeyRegistry>()?;
    m.add_class::<ApplyResult>()?;
    m.add_class::<Record>()?;
    m.add_class::<QuarantineEntry>()?;
    m.add_class::<Store>()?;
    queries::register(m)?;
    Ok(())
}
