//! The identity record as Python sees it.

use jukisync_core::record::{self, FieldValue, RecordView};
use jukisync_core::CoreError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{Error, Res};

/// One identity record: the stored bytes, read in place on field access (only the
/// wanted field is decoded), so `get_many` of many records builds one small object per
/// record and a status check reads one field.
#[pyclass(frozen, module = "jukisync._core")]
pub(crate) struct Record {
    raw: Vec<u8>,
}

impl Record {
    fn view(&self) -> Res<RecordView<'_>> {
        Ok(RecordView::decode(&self.raw)?)
    }

    pub(crate) fn wrap(raw: Option<Vec<u8>>) -> Option<Record> {
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

/// The first problem the tiers would find in this update (an encoded `Update`) from
/// `origin`, judged at `now` (µs; default: this machine's clock) with the tiers'
/// default clock skew, or None. The same rules as `Store.apply`, so a publisher can
/// refuse before it signs what every centre would halt on.
#[pyfunction]
#[pyo3(signature = (update, origin, now=None, max_skew_us=600_000_000))]
pub(crate) fn validate_update(
    update: &[u8],
    origin: &str,
    now: Option<u64>,
    max_skew_us: u64,
) -> crate::error::Res<Option<String>> {
    let update: jukisync_core::wire::Update = jukisync_core::wire::decode(update, "update")?;
    let bounds = jukisync_core::validate::TimeBounds {
        now: now.unwrap_or_else(jukisync_core::store::now_micros),
        skew: max_skew_us,
    };
    Ok(jukisync_core::validate::update_problem(&update, origin, &bounds))
}

// The signatures above spell the default skew out (stubtest reads it from there).
const _: () = assert!(jukisync_core::validate::DEFAULT_SKEW_US == 600_000_000);

/// (origin, first_seq, last_seq) an envelope's body claims, read without decoding its
/// updates nor verifying anything (for routing and batching before `Store.apply`),
/// or None when the bytes are not such an envelope.
#[pyfunction]
pub(crate) fn bundle_span(envelope: &[u8]) -> Option<(String, u64, u64)> {
    jukisync_core::wire::bundle_span(envelope).map(|(origin, first, last)| (origin.to_owned(), first, last))
}
