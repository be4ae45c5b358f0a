//! Just enough MessagePack reading to walk a stored record (or an envelope's head)
//! without decoding it: the hot reads (one field of many records, a batch
//! confirmation, the origin and range of a received bundle) skip what they do not need
//! instead of allocating every field. The markers and lengths are read with `rmp`'s
//! decoder primitives; this type only adds borrowing the bytes and skipping values.

use rmp::decode;
use rmp::Marker;

/// A scalar value as stored in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'a> {
    Nil,
    UInt(u64),
    Str(&'a [u8]),
}

/// Deeper than any jukisync message nests: a hostile value cannot exhaust the stack.
const MAX_DEPTH: usize = 16;

/// A cursor over MessagePack bytes that hands out borrowed strs and bins.
pub struct MsgReader<'a> {
    rest: &'a [u8],
}

impl<'a> MsgReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        MsgReader { rest: bytes }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (out, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(out)
    }

    fn peek(&self) -> Option<Marker> {
        self.rest.first().map(|b| Marker::from_u8(*b))
    }

    pub fn map_len(&mut self) -> Option<usize> {
        decode::read_map_len(&mut self.rest).ok().map(|n| n as usize)
    }

    pub fn raw_str(&mut self) -> Option<&'a [u8]> {
        let n = decode::read_str_len(&mut self.rest).ok()?;
        self.take(n as usize)
    }

    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let n = decode::read_bin_len(&mut self.rest).ok()?;
        self.take(n as usize)
    }

    pub fn uint(&mut self) -> Option<u64> {
        decode::read_int(&mut self.rest).ok()
    }

    pub fn optional_str(&mut self) -> Option<Option<&'a [u8]>> {
        if self.peek()? == Marker::Null {
            self.rest = &self.rest[1..];
            return Some(None);
        }
        self.raw_str().map(Some)
    }

    /// A nil, unsigned int or str value (what stored records hold), without validating
    /// the str as UTF-8.
    pub fn scalar(&mut self) -> Option<Scalar<'a>> {
        Some(match self.peek()? {
            Marker::Null => {
                self.rest = &self.rest[1..];
                Scalar::Nil
            }
            Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => Scalar::UInt(self.uint()?),
            _ => Scalar::Str(self.raw_str()?),
        })
    }

    /// Step over one value of any type (maps and arrays with what they hold).
    pub fn skip(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        // Peek at the marker, then let the rmp reader of that family read it whole.
        let marker = self.peek()?;
        let rd = &mut self.rest;
        let n = match marker {
            Marker::Null | Marker::True | Marker::False => 1,
            Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                decode::read_int::<u64, _>(rd).ok()?;
                0
            }
            Marker::FixNeg(_) | Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                decode::read_int::<i64, _>(rd).ok()?;
                0
            }
            Marker::F32 => {
                decode::read_f32(rd).ok()?;
                0
            }
            Marker::F64 => {
                decode::read_f64(rd).ok()?;
                0
            }
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => decode::read_str_len(rd).ok()? as usize,
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => decode::read_bin_len(rd).ok()? as usize,
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => decode::read_ext_meta(rd).ok()?.size as usize,
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let items = decode::read_array_len(rd).ok()?;
                return (0..items).try_for_each(|_| self.skip_nested(depth + 1));
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let entries = decode::read_map_len(rd).ok()?;
                return (0..u64::from(entries) * 2).try_for_each(|_| self.skip_nested(depth + 1));
            }
            Marker::Reserved => return None,
        };
        self.take(n).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out);
        out
    }

    #[test]
    fn skips_every_kind_of_value_and_lands_on_the_next() {
        use rmp::encode::*;
        let values: Vec<Vec<u8>> = vec![
            encoded(|o| write_nil(o).unwrap()),
            encoded(|o| write_bool(o, true).unwrap()),
            encoded(|o| drop(write_uint(o, 7))),
            encoded(|o| drop(write_uint(o, 300))),
            encoded(|o| drop(write_uint(o, 70_000))),
            encoded(|o| drop(write_uint(o, u64::MAX))),
            encoded(|o| drop(write_sint(o, -3))),
            encoded(|o| drop(write_sint(o, -300))),
            encoded(|o| drop(write_sint(o, i64::MIN))),
            encoded(|o| write_f32(o, 1.5).unwrap()),
            encoded(|o| write_f64(o, 1.5).unwrap()),
            encoded(|o| write_str(o, "山口").unwrap()),
            encoded(|o| write_str(o, &"x".repeat(300)).unwrap()),
            encoded(|o| write_str(o, &"x".repeat(70_000)).unwrap()),
            encoded(|o| write_bin(o, &[1; 40]).unwrap()),
            encoded(|o| write_bin(o, &[1; 70_000]).unwrap()),
            encoded(|o| {
                write_ext_meta(o, 4, 5).unwrap();
                o.extend_from_slice(&[0; 4]);
            }),
            encoded(|o| {
                write_ext_meta(o, 3, 5).unwrap();
                o.extend_from_slice(&[0; 3]);
            }),
            encoded(|o| {
                write_array_len(o, 20).unwrap();
                for i in 0..20 {
                    write_uint(o, i).unwrap();
                }
            }),
            encoded(|o| {
                write_map_len(o, 2).unwrap();
                write_str(o, "a").unwrap();
                write_array_len(o, 1).unwrap();
                write_nil(o).unwrap();
                write_str(o, "b").unwrap();
                write_map_len(o, 0).unwrap();
            }),
        ];
        for value in values {
            let mut bytes = value.clone();
            write_str(&mut bytes, "next").unwrap();
            let mut r = MsgReader::new(&bytes);
            assert_eq!(r.skip(), Some(()), "{value:02x?}");
            assert_eq!(r.raw_str(), Some(&b"next"[..]), "{value:02x?}");
            // Cut anywhere inside the value: skipping fails instead of reading past it.
            for cut in 0..value.len() {
                assert_eq!(MsgReader::new(&value[..cut]).skip(), None, "{value:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = [vec![0x91; 100], vec![0xc0]].concat();
        assert_eq!(MsgReader::new(&deep).skip(), None);
        let shallow = [vec![0x91; 10], vec![0xc0]].concat();
        assert_eq!(MsgReader::new(&shallow).skip(), Some(()));
    }

    #[test]
    fn scalars() {
        use rmp::encode::*;
        let bytes = encoded(|o| {
            write_nil(o).unwrap();
            write_uint(o, 1 << 40).unwrap();
            write_str(o, "s").unwrap();
        });
        let mut r = MsgReader::new(&bytes);
        assert_eq!(r.scalar(), Some(Scalar::Nil));
        assert_eq!(r.scalar(), Some(Scalar::UInt(1 << 40)));
        assert_eq!(r.scalar(), Some(Scalar::Str(b"s")));
        assert_eq!(r.scalar(), None);
    }
}
