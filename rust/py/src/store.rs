//! The tier store and the results of its operations.

use std::collections::HashMap;
use std::path::PathBuf;

use jukisync_core::record::{self, FieldValue};
use jukisync_core::store::{self, Centre, Outcome, Role, StoreOptions};
use jukisync_core::{crypto, CoreError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::divergence;
use crate::error::{Error, Res};
use crate::queries;
use crate::record::Record;
use crate::registry::KeyRegistry;

/// (origin, first retained seq, hash of the last pruned bundle, its archive).
type Floor<'py> = (String, u64, Bound<'py, PyBytes>, String);

/// Distinct str values `get_many_field` shares between records: enough for a status,
/// a reason or the municipalities of a prefecture; a name column stops sharing early.
const SHARED_VALUES: usize = 256;

/// The codes of a Python sequence of str in one buffer (with the GIL held).
fn codes_of(codes: &Bound<'_, PyAny>) -> PyResult<store::Codes> {
    let mut out = store::Codes::with_capacity(codes.len().unwrap_or(0));
    queries::each_code(codes, |code| out.push(code))?;
    Ok(out)
}

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub(crate) struct ApplyResult {
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
    pending_rejected: Option<Py<ApplyResult>>,
}

impl ApplyResult {
    fn from_outcome(py: Python<'_>, o: Outcome) -> PyResult<Self> {
        let pending_rejected = match o.pending_rejected {
            Some(inner) => Some(Py::new(py, ApplyResult::from_outcome(py, *inner)?)?),
            None => None,
        };
        Ok(ApplyResult {
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
            pending_rejected,
        })
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

#[pyclass(frozen, get_all, module = "jukisync._core")]
pub(crate) struct QuarantineEntry {
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
    /// (action, operator, at µs, reason, role) of each operator decision, oldest first.
    actions: Vec<(String, String, u64, String, String)>,
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
            actions: e.actions.into_iter().map(|a| (a.action, a.operator, a.at, a.reason, a.role)).collect(),
        }
    }
}

#[pyclass(frozen, module = "jukisync._core")]
pub(crate) struct Store {
    pub(crate) inner: store::Store,
    path: String,
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

fn operator(operator: Option<String>, reason: Option<String>) -> PyResult<Option<store::Operator>> {
    match (operator, reason) {
        (Some(operator), Some(reason)) => Ok(Some(store::Operator { operator, reason })),
        (None, None) => Ok(None),
        _ => Err(PyValueError::new_err("operator and reason go together")),
    }
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (
        path, *, role=None, registry, centre_id=None, centre_key=None, centre_key_id=None,
        map_size=1 << 34, max_bundle_bytes=8 << 20, pending_limit=10_000, require_attestation=None,
        max_skew_us=600_000_000, prefectures=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        role: Option<&str>,
        registry: &KeyRegistry,
        centre_id: Option<String>,
        centre_key: Option<Vec<u8>>,
        centre_key_id: Option<String>,
        map_size: usize,
        max_bundle_bytes: usize,
        pending_limit: usize,
        require_attestation: Option<bool>,
        max_skew_us: u64,
        prefectures: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let given =
            match role {
                None => None,
                Some(r) => Some(Role::parse(r).ok_or_else(|| {
                    PyValueError::new_err(format!("role must be 'aggregator' or 'national', not {r:?}"))
                })?),
            };
        let centre = match (centre_id, centre_key, centre_key_id) {
            (Some(id), Some(key), Some(key_id)) => {
                Some(Centre { id, key_id, key: crypto::signing_key(&key).map_err(Error::from)? })
            }
            (None, None, None) => None,
            _ => return Err(PyValueError::new_err("centre_id, centre_key and centre_key_id go together")),
        };
        let opts = StoreOptions {
            role: given.unwrap_or(Role::National),
            centre,
            map_size,
            max_bundle_bytes,
            pending_limit,
            // Without a role (opened as recorded) the core keeps this only for national.
            require_attestation: require_attestation.unwrap_or(given.is_none_or(|r| r == Role::National)),
            max_skew_us,
            prefectures,
        };
        let registry = registry.inner.clone();
        let display = path.display().to_string();
        let inner = py
            .detach(|| match given {
                Some(_) => store::Store::open(&path, registry, opts),
                None => store::Store::open_as_recorded(&path, registry, opts),
            })
            .map_err(Error::from)?;
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

    /// A compacted, consistent hot copy of the environment at `dest_dir/data.mdb`;
    /// its size in bytes.
    fn copy_compacted(&self, py: Python<'_>, dest_dir: PathBuf) -> Res<u64> {
        Ok(py.detach(|| self.inner.copy_compacted(&dest_dir))?)
    }

    /// Carry `source`'s query audit trail into this store (whose trail is empty), in
    /// append mode; the number of entries copied. Verify with `audit_verify` after.
    fn copy_audit_from(&self, py: Python<'_>, source: PyRef<'_, Store>) -> Res<u64> {
        let source: &Store = &source;
        Ok(py.detach(|| self.inner.copy_audit_from(&source.inner))?)
    }

    /// Load a snapshot: `source`'s records, indexes and Merkle sums, in key order, into
    /// this empty store with LMDB's append mode (`append=False`: ordinary puts); the
    /// records loaded. Copied as a restore copies the file: `check` compares them.
    #[pyo3(signature = (source, append=true))]
    fn load_records_from(&self, py: Python<'_>, source: PyRef<'_, Store>, append: bool) -> Res<u64> {
        let source: &Store = &source;
        Ok(py.detach(|| self.inner.load_records_from(&source.inner, append))?)
    }

    /// Bulk load `(code, stored record bytes)` pairs, in strictly ascending code order,
    /// into this empty store with append mode, then build its indexes and Merkle sums
    /// from them; the records loaded.
    #[pyo3(signature = (records, append=true))]
    fn load_sorted(&self, py: Python<'_>, records: Vec<(String, Vec<u8>)>, append: bool) -> Res<u64> {
        Ok(py.detach(|| {
            self.inner.load_sorted(records.iter().map(|(code, raw)| Ok((code.as_bytes(), raw.as_slice()))), append)
        })?)
    }

    /// Queue `source`'s forward backlog here (entries of this store's change log);
    /// the number queued.
    fn copy_forward_backlog_from(&self, py: Python<'_>, source: PyRef<'_, Store>) -> Res<u64> {
        let source: &Store = &source;
        Ok(py.detach(|| self.inner.copy_forward_backlog_from(&source.inner))?)
    }

    /// Record the role of a store `bootstrap` rebuilt (opened as national to apply
    /// without attesting) for the node that will open it.
    fn record_role_after_rebuild(&self, py: Python<'_>, role: &str) -> PyResult<()> {
        let role = store::Role::parse(role)
            .ok_or_else(|| PyValueError::new_err(format!("role must be 'aggregator' or 'national', not {role:?}")))?;
        py.detach(|| self.inner.record_role_after_rebuild(role)).map_err(Error::from)?;
        Ok(())
    }

    fn set_registry(&self, registry: &KeyRegistry) {
        self.inner.set_registry(registry.inner.clone());
    }

    /// Attest with another key of this centre (a rotated own key) what is received
    /// from `not_before` (µs) on.
    #[pyo3(signature = (key_id, key, not_before=0))]
    fn set_centre_key(&self, key_id: String, key: Vec<u8>, not_before: u64) -> Res<()> {
        let key = crypto::signing_key(&key)?;
        Ok(self.inner.set_centre_key(key_id, key, not_before)?)
    }

    /// The key id this centre attests with at `at` (µs, default now); None: the store
    /// does not attest.
    #[pyo3(signature = (at=None))]
    fn centre_key_id(&self, at: Option<u64>) -> Option<String> {
        self.inner.centre_key_id(at.unwrap_or_else(store::now_micros))
    }

    #[pyo3(signature = (envelopes, received_at=None, *, forwarded=Vec::new()))]
    fn apply(
        &self,
        py: Python<'_>,
        envelopes: Vec<PyBackedBytes>,
        received_at: Option<u64>,
        forwarded: Vec<u64>,
    ) -> PyResult<Vec<ApplyResult>> {
        // The envelopes are read where Python holds them (no copy): `PyBackedBytes`
        // keeps each `bytes` alive while the GIL is released.
        let received_at = received_at.unwrap_or_else(store::now_micros);
        let outcomes = py
            .detach(|| {
                let raws: Vec<&[u8]> = envelopes.iter().map(|b| &b[..]).collect();
                self.inner.apply_marking_forwarded(&raws, received_at, &forwarded)
            })
            .map_err(Error::from)?;
        outcomes.into_iter().map(|o| ApplyResult::from_outcome(py, o)).collect()
    }

    fn get(&self, py: Python<'_>, code: String) -> Res<Option<Record>> {
        let mut raw = py.detach(|| self.inner.get_many_raw(std::slice::from_ref(&code)))?;
        Ok(Record::wrap(raw.pop().flatten()))
    }

    fn get_many(&self, py: Python<'_>, codes: &Bound<'_, PyAny>) -> PyResult<Vec<Option<Record>>> {
        let codes = codes_of(codes)?;
        let mut raws: Vec<Option<Vec<u8>>> = vec![None; codes.len()];
        py.detach(|| {
            self.inner.visit_many(&codes, |i, raw| {
                raws[i] = Some(raw.to_vec());
                Ok(())
            })
        })
        .map_err(Error::from)?;
        Ok(raws.into_iter().map(Record::wrap).collect())
    }

    /// One field of each record, in the order of `codes` (None for a code the store
    /// does not hold): `[r.<field> if r else None for r in get_many(codes)]` without a
    /// `Record` per code, each record read in place with the GIL released. Repeated
    /// values (a status, a municipality) are one str object, not one per record.
    fn get_many_field<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
        field: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        if !record::FIELD_NAMES.contains(&field) {
            return Err(PyValueError::new_err(format!(
                "field must be one of {}, not {field:?}",
                record::FIELD_NAMES.join(", ")
            )));
        }
        let codes = codes_of(codes)?;
        let column = py.detach(|| self.inner.get_many_field(&codes, field)).map_err(Error::from)?;
        let none = py.None().into_bound(py);
        let mut seen: HashMap<&str, Bound<'py, PyAny>> = HashMap::new();
        let mut out = Vec::with_capacity(column.cells.len());
        for i in 0..column.cells.len() {
            out.push(match column.value(i) {
                None | Some(FieldValue::Nil) => none.clone(),
                Some(FieldValue::UInt(n)) => n.into_pyobject(py)?.into_any(),
                Some(FieldValue::Str(text)) => match seen.get(text) {
                    Some(same) => same.clone(),
                    None => {
                        let s = PyString::new(py, text).into_any();
                        if seen.len() < SHARED_VALUES {
                            seen.insert(text, s.clone());
                        }
                        s
                    }
                },
            });
        }
        PyList::new(py, out)
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

    /// Per origin, what a retention policy lets go: (origin, from_seq, upto, bundles).
    fn retention_plan(
        &self,
        py: Python<'_>,
        keep_bundles: u64,
        created_before: u64,
    ) -> Res<Vec<(String, u64, u64, u64)>> {
        let cuts = py.detach(|| self.inner.retention_plan(keep_bundles, created_before))?;
        Ok(cuts.into_iter().map(|c| (c.origin, c.from_seq, c.upto, c.bundles)).collect())
    }

    fn prune_changelog(&self, py: Python<'_>, cuts: Vec<(String, u64)>, archive: &str) -> Res<Vec<(String, u64)>> {
        Ok(py.detach(|| self.inner.prune_changelog(&cuts, archive))?)
    }

    fn retention_floors<'py>(&self, py: Python<'py>) -> Res<Vec<Floor<'py>>> {
        let floors = py.detach(|| self.inner.retention_floors())?;
        Ok(floors.into_iter().map(|f| (f.origin, f.first_kept, PyBytes::new(py, &f.prev_hash), f.archive)).collect())
    }

    fn archive_for(&self, py: Python<'_>, origin: &str, seq: u64) -> Res<Option<String>> {
        Ok(py.detach(|| self.inner.archive_for(origin, seq))?)
    }

    fn changelog_entries(&self, py: Python<'_>) -> Res<u64> {
        Ok(py.detach(|| self.inner.changelog_entries())?)
    }

    #[pyo3(signature = (municipality_prefix=""))]
    fn digest(&self, py: Python<'_>, municipality_prefix: &str) -> Res<String> {
        Ok(py.detach(|| self.inner.digest(municipality_prefix))?)
    }

    fn stats(&self, py: Python<'_>) -> Res<std::collections::HashMap<String, u64>> {
        Ok(py.detach(|| self.inner.stats())?.into_iter().collect())
    }

    #[pyo3(signature = (limit=1000, after=0))]
    fn forward_batch<'py>(
        &self,
        py: Python<'py>,
        limit: usize,
        after: u64,
    ) -> Res<Vec<(u64, String, Bound<'py, PyBytes>)>> {
        let batch = py.detach(|| self.inner.forward_batch(limit, after))?;
        Ok(batch.into_iter().map(|f| (f.id, f.origin, PyBytes::new(py, &f.envelope))).collect())
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

    #[pyo3(signature = (id, *, operator=None, reason=None, at=None))]
    fn release(
        &self,
        py: Python<'_>,
        id: u64,
        operator: Option<String>,
        reason: Option<String>,
        at: Option<u64>,
    ) -> PyResult<ApplyResult> {
        let by = self::operator(operator, reason)?;
        let at = at.unwrap_or_else(store::now_micros);
        let outcome = py.detach(|| self.inner.release_by(id, at, by.as_ref())).map_err(Error::from)?;
        ApplyResult::from_outcome(py, outcome)
    }

    #[pyo3(signature = (id, *, operator=None, reason=None, at=None))]
    fn drop(
        &self,
        py: Python<'_>,
        id: u64,
        operator: Option<String>,
        reason: Option<String>,
        at: Option<u64>,
    ) -> PyResult<()> {
        let by = self::operator(operator, reason)?;
        let at = at.unwrap_or_else(store::now_micros);
        Ok(py.detach(|| self.inner.drop_by(id, at, by.as_ref())).map_err(Error::from)?)
    }

    // ---- consistency and divergence (check.rs, reconcile.rs, rebuild.rs) --------------

    /// Every inconsistency of the store as (kind, detail); empty when consistent.
    fn check(&self, py: Python<'_>) -> Res<Vec<(&'static str, String)>> {
        Ok(py.detach(|| self.inner.check())?.into_iter().map(|i| (i.kind, i.detail)).collect())
    }

    /// Compare with another store: heads per origin, then each origin's Merkle tree.
    fn reconcile(&self, py: Python<'_>, other: &Store) -> PyResult<divergence::Reconciliation> {
        let found = py.detach(|| self.inner.reconcile(&other.inner)).map_err(Error::from)?;
        divergence::reconciliation(py, found)
    }

    /// Recompute these records from the local change log; how many changed.
    fn rebuild_codes(&self, py: Python<'_>, codes: Vec<String>) -> Res<usize> {
        Ok(py.detach(|| self.inner.rebuild_codes(&codes))?)
    }

    /// Rebuild every index and the Merkle sums from the records.
    fn rebuild_indexes(&self, py: Python<'_>) -> Res<()> {
        Ok(py.detach(|| self.inner.rebuild_indexes())?)
    }

    /// Each origin's Merkle root: origin -> (records, sum).
    fn merkle_roots<'py>(&self, py: Python<'py>) -> Res<Bound<'py, PyDict>> {
        let roots = py.detach(|| self.inner.merkle_roots())?;
        let d = PyDict::new(py);
        for (origin, count, sum) in roots {
            d.set_item(origin, (count, PyBytes::new(py, &sum))).map_err(|e| Error(CoreError::Store(e.to_string())))?;
        }
        Ok(d)
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

    /// A lookup by 住民票コード (or by 個人番号 when `by_number`), audited, answered
    /// as the query service's encoded `Found` showing the fields of the mask `fields`
    /// (bit i: `ANSWER_FIELDS[i]`). The caller has checked the policy.
    #[pyo3(signature = (key, *, requester, task, fields, by_number=false, time=None, detail=""))]
    #[allow(clippy::too_many_arguments)]
    fn lookup_answer(
        &self,
        py: Python<'_>,
        key: String,
        requester: String,
        task: String,
        fields: u16,
        by_number: bool,
        time: Option<u64>,
        detail: &str,
    ) -> Res<Py<PyBytes>> {
        queries::lookup_answer(self, py, by_number, key, fields, (requester, task, time, detail.to_string()))
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

    fn codes_of(&self, py: Python<'_>, code: String) -> Res<Vec<String>> {
        Ok(py.detach(|| self.inner.codes_of(&code))?)
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

    /// (durable commits the audit group commit made, entries they held) since opened.
    fn audit_commit_counts(&self) -> (u64, u64) {
        self.inner.audit_commit_counts()
    }

    /// Wall time (µs) the group commit's leaders spent writing and committing groups
    /// since opened (next to the elapsed time: whether the commits bound the rate).
    fn audit_commit_busy_us(&self) -> u64 {
        self.inner.audit_commit_busy_us()
    }

    fn __repr__(&self) -> String {
        format!("Store({:?}, role={:?})", self.path, role_name(self.inner.role()))
    }
}
