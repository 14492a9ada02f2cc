//! The aggregate's protobuf message read in place: the wire format (varints, keys,
//! length-delimited fields) over the message's bytes, nothing copied or allocated. Only what
//! `AggregatedRecord` needs; whatever else a message holds is skipped as protobuf says unknown
//! fields are (groups included). It accepts what `prost` accepts for `AggregatedRecord` and
//! refuses what it refuses (a test runs both over the same bytes).

use super::CorruptAggregate;
use std::ops::Range;

/// Wire type of a varint (`uint64`).
pub(super) const VARINT: u8 = 0;
/// Wire type of a length-delimited field (`string`, `bytes`, a message).
pub(super) const LEN: u8 = 2;
/// How deep groups may nest in an unknown field (`prost`'s recursion limit).
const MAX_DEPTH: u32 = 100;

fn malformed(what: String) -> CorruptAggregate {
    CorruptAggregate::Protobuf(what)
}

/// A position in (a field of) the message. Offsets in errors are from the message's start.
pub(super) struct Cursor<'a> {
    /// The message up to the end of what this cursor reads.
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Reads `buf[range]`, with offsets counted from the start of `buf`.
    pub(super) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Cursor {
            buf: &buf[..range.end],
            pos: range.start,
        }
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// The message this cursor reads (up to the end of what it reads).
    pub(super) fn whole(&self) -> &'a [u8] {
        self.buf
    }

    /// A varint (at most 10 bytes, and at most 64 bits).
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, CorruptAggregate> {
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Result<u64, CorruptAggregate> {
        let at = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(malformed(format!("truncated varint at byte {at}")));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                break;
            }
            value |= u64::from(b & 0x7F) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(malformed(format!("invalid varint at byte {at}")))
    }

    /// A field's key: its number and wire type.
    #[inline]
    pub(super) fn key(&mut self) -> Result<(u32, u8), CorruptAggregate> {
        let at = self.pos;
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .ok()
            .filter(|&f| f != 0 && key <= u64::from(u32::MAX));
        match field {
            Some(field) => Ok((field, (key & 7) as u8)),
            None => Err(malformed(format!("invalid key {key} at byte {at}"))),
        }
    }

    /// The bytes of a length-delimited field (its length read here), as a range of the message.
    #[inline]
    pub(super) fn length_delimited(&mut self) -> Result<Range<usize>, CorruptAggregate> {
        let at = self.pos;
        let len = self.varint()?;
        let left = self.buf.len() - self.pos;
        if len > left as u64 {
            return Err(malformed(format!(
                "length {len} at byte {at} runs past the end ({left} bytes left)"
            )));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// Fails unless field `field` has wire type `want`.
    #[inline]
    pub(super) fn expect(&self, field: u32, wire: u8, want: u8) -> Result<(), CorruptAggregate> {
        if wire == want {
            Ok(())
        } else {
            Err(malformed(format!(
                "field {field} has wire type {wire} (expected {want}) before byte {}",
                self.pos
            )))
        }
    }

    /// Skips the value of a field this reader does not know.
    pub(super) fn skip(&mut self, field: u32, wire: u8) -> Result<(), CorruptAggregate> {
        self.skip_nested(field, wire, 0)
    }

    fn skip_nested(&mut self, field: u32, wire: u8, depth: u32) -> Result<(), CorruptAggregate> {
        match wire {
            VARINT => self.varint().map(drop),
            1 => self.advance(8),
            LEN => self.length_delimited().map(drop),
            5 => self.advance(4),
            3 => {
                if depth >= MAX_DEPTH {
                    return Err(malformed(format!(
                        "groups nest deeper than {MAX_DEPTH} at byte {}",
                        self.pos
                    )));
                }
                loop {
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == 4 {
                        return if inner == field {
                            Ok(())
                        } else {
                            Err(malformed(format!(
                                "group {field} ended by an end-group of field {inner} before byte {}",
                                self.pos
                            )))
                        };
                    }
                    self.skip_nested(inner, inner_wire, depth + 1)?;
                }
            }
            _ => Err(malformed(format!(
                "field {field} has wire type {wire}, which is not valid here (before byte {})",
                self.pos
            ))),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), CorruptAggregate> {
        if self.buf.len() - self.pos < n {
            return Err(malformed(format!(
                "truncated {n}-byte field at byte {}",
                self.pos
            )));
        }
        self.pos += n;
        Ok(())
    }
}
