//! The stored record and the conflict rule (DESIGN.md §3).

use serde::{Deserialize, Serialize};

use crate::msgpack::{MsgReader, Scalar};

use crate::wire::Update;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonFamily {
    Creation,
    Removal,
    Correction,
}

impl ReasonFamily {
    pub fn of(reason: &str) -> Option<Self> {
        Some(match reason {
            "move_in" | "move_in_from_abroad" | "birth" | "entry_by_authority" => ReasonFamily::Creation,
            "move_out" | "move_out_abroad" | "death" | "removal_by_authority" => ReasonFamily::Removal,
            "address_change"
            | "correction_by_authority"
            | "error_correction"
            | "kojin_bango_change"
            | "juminhyo_code_change"
            | "former_surname_alias" => ReasonFamily::Correction,
            _ => return None,
        })
    }
}

pub const ACTIVE: &str = "active";
pub const REMOVED: &str = "removed";
pub const REDIRECT: &str = "redirect";

/// A record as stored in the `records` database (MessagePack map, field names as
/// keys; `jukisync.messages.StoredRecord` decodes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub juminhyo_code: String,
    pub status: String,
    pub redirect_to: Option<String>,
    pub kojin_bango: String,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: u8,
    pub address: String,
    pub municipality: String,
    pub reason: String,
    pub changed_on: String,
    pub recorded_at: u64,
    pub origin: String,
    pub seq: u64,
}

/// The version that orders changes to one record: a record is replaced only by a
/// higher one, so every tier converges whatever the delivery order.
pub type Version<'a> = (&'a str, u64, &'a str, u64);

impl Record {
    pub fn from_update(u: &Update, origin: &str) -> Self {
        let status = match ReasonFamily::of(&u.reason) {
            Some(ReasonFamily::Removal) => REMOVED,
            _ => ACTIVE,
        };
        Record {
            juminhyo_code: u.juminhyo_code.clone(),
            status: status.into(),
            redirect_to: None,
            kojin_bango: u.kojin_bango.clone(),
            name: u.name.clone(),
            name_kana: u.name_kana.clone(),
            former_surname: u.former_surname.clone(),
            alias: u.alias.clone(),
            birth_date: u.birth_date.clone(),
            sex: u.sex,
            address: u.address.clone(),
            municipality: u.municipality.clone(),
            reason: u.reason.clone(),
            changed_on: u.changed_on.clone(),
            recorded_at: u.recorded_at,
            origin: origin.into(),
            seq: u.seq,
        }
    }

    /// What is left at the old code after a 住民票コード change.
    pub fn redirect_from(&self, old_code: &str) -> Self {
        Record {
            juminhyo_code: old_code.into(),
            status: REDIRECT.into(),
            redirect_to: Some(self.juminhyo_code.clone()),
            ..self.clone()
        }
    }

    pub fn version(&self) -> Version<'_> {
        (&self.changed_on, self.recorded_at, &self.origin, self.seq)
    }

    /// Whether this record replaces `other` (the conflict rule, DESIGN.md §3): the
    /// higher version, except that a 転出 (move-out) by a municipality never outranks a
    /// record another municipality made (a 転入 or a later correction there) dated no
    /// more than `MOVE_WINDOW_DAYS` before it. A move is two events from two clocks: the
    /// old municipality's removal must not win over the new holder's record because its
    /// clock runs ahead, or because its 転出予定日 was a few days after the actual move.
    pub fn supersedes(&self, other: &Record) -> bool {
        if moved_on_from(other, self) {
            return true;
        }
        if moved_on_from(self, other) {
            return false;
        }
        self.version() > other.version()
    }

    pub fn is_indexed(&self) -> bool {
        self.status != REDIRECT
    }
}

/// A 転出 may be filed up to 14 days before the move and a 転入 within 14 days after it.
pub const MOVE_WINDOW_DAYS: i64 = 14;

/// Whether `holder`'s record is at the municipality the resident moved to after
/// `removal` (a 転出 elsewhere): made by another municipality, not a removal itself, and
/// dated at most `MOVE_WINDOW_DAYS` before the 転出 (or any time after it).
fn moved_on_from(removal: &Record, holder: &Record) -> bool {
    removal.reason == "move_out"
        && removal.status == REMOVED
        && holder.status == ACTIVE
        && holder.municipality != removal.municipality
        && match (day_number(&holder.changed_on), day_number(&removal.changed_on)) {
            (Some(h), Some(r)) => h + MOVE_WINDOW_DAYS >= r,
            _ => false,
        }
}

/// Days since 1970-01-01 of a YYYY-MM-DD date (H. Hinnant's `days_from_civil`).
pub fn day_number(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = date.get(0..4)?.parse().ok()?;
    let m: i64 = date.get(5..7)?.parse().ok()?;
    let d: i64 = date.get(8..10)?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

pub fn update_version<'a>(u: &'a Update, origin: &'a str) -> Version<'a> {
    (&u.changed_on, u.recorded_at, origin, u.seq)
}

/// A stored record read in place: every text field borrows from the stored bytes, so
/// looking records up costs no allocation per field (`jukisync._core.Record` keeps the
/// bytes and decodes a view on field access).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView<'a> {
    pub juminhyo_code: &'a str,
    pub status: &'a str,
    pub redirect_to: Option<&'a str>,
    pub kojin_bango: &'a str,
    pub name: &'a str,
    pub name_kana: &'a str,
    pub former_surname: Option<&'a str>,
    pub alias: Option<&'a str>,
    pub birth_date: &'a str,
    pub sex: u8,
    pub address: &'a str,
    pub municipality: &'a str,
    pub reason: &'a str,
    pub changed_on: &'a str,
    pub recorded_at: u64,
    pub origin: &'a str,
    pub seq: u64,
}

impl<'a> RecordView<'a> {
    pub fn decode(raw: &'a [u8]) -> crate::Result<Self> {
        rmp_serde::from_slice(raw).map_err(|e| crate::CoreError::Malformed(format!("stored record: {e}")))
    }
}

/// One value of a stored record, as read by `field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Nil,
    UInt(u64),
    Str(&'a str),
}

/// The fields `field` reads (every field of a stored record, as `Record` names them).
pub const FIELD_NAMES: [&str; 17] = [
    "juminhyo_code",
    "status",
    "redirect_to",
    "kojin_bango",
    "name",
    "name_kana",
    "former_surname",
    "alias",
    "birth_date",
    "sex",
    "address",
    "municipality",
    "reason",
    "changed_on",
    "recorded_at",
    "origin",
    "seq",
];

/// Read one field of a stored record without decoding the others: walk the map's keys,
/// skipping values, and validate only the wanted value. Reading one field of many
/// records (a status check) then costs a fraction of a full decode.
pub fn field<'a>(raw: &'a [u8], name: &str) -> crate::Result<FieldValue<'a>> {
    let bad = || crate::CoreError::Malformed(format!("stored record: cannot read field {name}"));
    let mut r = MsgReader::new(raw);
    let entries = r.map_len().ok_or_else(bad)?;
    for _ in 0..entries {
        if r.raw_str().ok_or_else(bad)? == name.as_bytes() {
            return Ok(match r.scalar().ok_or_else(bad)? {
                Scalar::Nil => FieldValue::Nil,
                Scalar::UInt(n) => FieldValue::UInt(n),
                Scalar::Str(s) => FieldValue::Str(std::str::from_utf8(s).map_err(|_| bad())?),
            });
        }
        r.skip().ok_or_else(bad)?;
    }
    Err(crate::CoreError::Malformed(format!("stored record: no field {name}")))
}
