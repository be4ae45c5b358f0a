//! A lookup's answer encoded as the query service's `Found` response, byte for byte the
//! MessagePack msgspec writes for it (python/jukisync/query/service.py), so that the
//! RPC path builds no Python object per field: the service checks the policy, then one
//! call answers, logs, waits for the durable commit and encodes, without the GIL.

use crate::error::Result;
use crate::query::Access;
use crate::record::Record;
use crate::store::Store;

/// The fields a task may see, in the order an answer lists them: the order of
/// `jukisync.query.policy.Field` (a test on the Python side checks they agree). A
/// field mask has bit `i` set when `ANSWER_FIELDS[i]` may be shown.
pub const ANSWER_FIELDS: [&str; 13] = [
    "juminhyo_code",
    "kojin_bango",
    "name",
    "name_kana",
    "former_surname",
    "alias",
    "birth_date",
    "sex",
    "address",
    "municipality",
    "status",
    "reason",
    "changed_on",
];

const JUMINHYO_CODE_BIT: u16 = 1;

enum Value<'a> {
    Str(&'a str),
    Opt(Option<&'a str>),
    UInt(u64),
}

fn value<'a>(r: &'a Record, i: usize) -> Value<'a> {
    match i {
        0 => Value::Str(&r.juminhyo_code),
        1 => Value::Str(&r.kojin_bango),
        2 => Value::Str(&r.name),
        3 => Value::Str(&r.name_kana),
        4 => Value::Opt(r.former_surname.as_deref()),
        5 => Value::Opt(r.alias.as_deref()),
        6 => Value::Str(&r.birth_date),
        7 => Value::UInt(u64::from(r.sex)),
        8 => Value::Str(&r.address),
        9 => Value::Str(&r.municipality),
        10 => Value::Str(&r.status),
        11 => Value::Str(&r.reason),
        _ => Value::Str(&r.changed_on),
    }
}

/// `Found(query=kind, audit_id, records=[the record's allowed fields] or [],
/// total=len(records), redirected_from)` as msgspec encodes it (all fields, tag
/// first, definition order). `redirected_from` (the code asked for, when it changed
/// since) is shown only when the task may see 住民票コード, as the service does.
pub fn encode_found(
    kind: &str,
    audit_id: u64,
    record: Option<&Record>,
    fields: u16,
    redirected_from: Option<&str>,
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(512));
    w.map(7);
    w.str("kind");
    w.str("found");
    w.str("query");
    w.str(kind);
    w.str("audit_id");
    w.uint(audit_id);
    w.str("records");
    match record {
        Some(r) => {
            w.array(1);
            let shown = (0..ANSWER_FIELDS.len()).filter(|i| fields & (1 << i) != 0);
            w.map(shown.clone().count());
            for i in shown {
                w.str(ANSWER_FIELDS[i]);
                match value(r, i) {
                    Value::Str(s) | Value::Opt(Some(s)) => w.str(s),
                    Value::Opt(None) => w.nil(),
                    Value::UInt(n) => w.uint(n),
                }
            }
        }
        None => w.array(0),
    }
    w.str("scores");
    w.array(0);
    w.str("total");
    w.uint(u64::from(record.is_some()));
    w.str("redirected_from");
    match redirected_from.filter(|_| fields & JUMINHYO_CODE_BIT != 0) {
        Some(code) => w.str(code),
        None => w.nil(),
    }
    w.0
}

impl Store {
    /// An audited lookup (by 住民票コード, or by 個人番号 when `by_number`) answered as
    /// encoded `Found` bytes showing the fields of `fields` (a mask over
    /// `ANSWER_FIELDS`): returned only once its audit entry is durable, as `lookup`.
    pub fn lookup_answer(&self, by_number: bool, key: &str, access: &Access, fields: u16) -> Result<Vec<u8>> {
        let (kind, l) = if by_number {
            ("kojin_bango", self.lookup_number(key, access)?)
        } else {
            ("code", self.lookup(key, access)?)
        };
        Ok(encode_found(kind, l.audit_id, l.record.as_ref(), fields, l.redirected_from.as_deref()))
    }
}

/// The few MessagePack forms an answer needs, through rmp's encoders (each form in its
/// shortest encoding, as msgspec writes them). Writing into a `Vec` cannot fail.
struct Writer(Vec<u8>);

const INFALLIBLE: &str = "writing MessagePack into a Vec cannot fail";

impl Writer {
    fn map(&mut self, n: usize) {
        rmp::encode::write_map_len(&mut self.0, n as u32).expect(INFALLIBLE);
    }

    fn array(&mut self, n: usize) {
        rmp::encode::write_array_len(&mut self.0, n as u32).expect(INFALLIBLE);
    }

    fn nil(&mut self) {
        rmp::encode::write_nil(&mut self.0).expect(INFALLIBLE);
    }

    fn str(&mut self, s: &str) {
        rmp::encode::write_str(&mut self.0, s).expect(INFALLIBLE);
    }

    fn uint(&mut self, n: u64) {
        rmp::encode::write_uint(&mut self.0, n).expect(INFALLIBLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_take_their_shortest_forms() {
        let mut w = Writer(Vec::new());
        for n in [0u64, 127, 128, 255, 256, 65_535, 65_536, u64::from(u32::MAX), u64::from(u32::MAX) + 1] {
            w.uint(n);
        }
        assert_eq!(hex::encode(&w.0), "007fcc80ccffcd0100cdffffce00010000ceffffffffcf0000000100000000");
        let mut w = Writer(Vec::new());
        w.str(&"a".repeat(31));
        w.str(&"a".repeat(32));
        w.str(&"a".repeat(256));
        assert_eq!(w.0[0], 0xbf);
        assert_eq!(&w.0[32..34], &[0xd9, 32]);
        assert_eq!(&w.0[66..69], &[0xda, 1, 0]);
    }

    #[test]
    fn not_found_answer() {
        let bytes = encode_found("code", 5, None, u16::MAX, Some("12345678901"));
        let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "found", "query": "code", "audit_id": 5, "records": [],
                "scores": [], "total": 0, "redirected_from": "12345678901"})
        );
    }
}
