//! Just enough MessagePack reading to walk a stored record without decoding it: the
//! hot reads (one field of many records, a batch confirmation) skip what they do not
//! need instead of allocating every field.

/// A scalar value as stored in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'a> {
    Nil,
    UInt(u64),
    Str(&'a [u8]),
}

/// Just enough MessagePack for stored records: maps, str, nil, bool, ints, bin.
pub struct MsgReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> MsgReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        MsgReader { bytes, pos: 0 }
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    pub fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn be(&mut self, n: usize) -> Option<usize> {
        Some(self.take(n)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }

    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    /// The length of a str whose marker is `m`, or None if `m` is not a str marker.
    pub fn str_len(&mut self, m: u8) -> Option<usize> {
        match m {
            0xa0..=0xbf => Some(usize::from(m & 0x1f)),
            0xd9 => self.be(1),
            0xda => self.be(2),
            0xdb => self.be(4),
            _ => None,
        }
    }

    pub fn raw_str(&mut self) -> Option<&'a [u8]> {
        let m = self.byte()?;
        let n = self.str_len(m)?;
        self.take(n)
    }

    pub fn optional_str(&mut self) -> Option<Option<&'a [u8]>> {
        if self.bytes.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        self.raw_str().map(Some)
    }

    /// A nil, unsigned int or str value (what stored records hold), without validating
    /// the str as UTF-8.
    pub fn scalar(&mut self) -> Option<Scalar<'a>> {
        let m = *self.bytes.get(self.pos)?;
        Some(match m {
            0xc0 => {
                self.pos += 1;
                Scalar::Nil
            }
            0x00..=0x7f => {
                self.pos += 1;
                Scalar::UInt(u64::from(m))
            }
            0xcc..=0xcf => {
                self.pos += 1;
                Scalar::UInt(self.be(1 << (m - 0xcc))? as u64)
            }
            _ => Scalar::Str(self.raw_str()?),
        })
    }

    pub fn skip(&mut self) -> Option<()> {
        let m = self.byte()?;
        let n = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 | 0xca => 4,
            0xcf | 0xd3 | 0xcb => 8,
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => self.str_len(m)?,
        };
        self.take(n).map(|_| ())
    }
}
