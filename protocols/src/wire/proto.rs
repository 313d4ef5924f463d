//! Hand-written proto3 primitives: varints, tags, length-delimited fields and unknown-field skipping.
//!
//! Only what `p2p.proto` needs. The decoding rules follow Go's `protowire` (which Kraken's
//! `proto.Unmarshal` uses), so that shoal accepts and rejects the same inputs:
//!
//! - a varint has at most 10 bytes, and the 10th may only carry the 64th bit;
//! - field number 0 and numbers above 2²⁹−1 are invalid;
//! - wire types 6 and 7 do not exist; groups (3/4) are skipped like any unknown field.
//!
//! ## Kept by hand, for Kraken's bytes
//!
//! No protobuf crate is used: shoal must write the bytes Go's `proto.Marshal` writes for
//! `p2p.proto` (a real Kraken peer reads them, and their length is what the 32 KiB frame limit and the
//! simulated bandwidth count) and accept and reject exactly the inputs Go's `protowire` does (the
//! rules above). A generated codec brings its own encoder and its own acceptance rules, which would
//! need the same pinning.
//!
//! Pinned by `proto::tests::varint_lengths_match_encoding` and `malformed_varints_are_errors`, and in
//! `wire/tests.rs` by `malformed_protobuf_is_an_error` (truncated and overlong varints, field 0, wire
//! type 6, truncated fields, unbalanced and too-deep groups) and
//! `unknown_fields_and_wire_types_are_skipped`. Their expected bytes are written out by hand from the
//! protobuf encoding rules; none was captured from Go's `protowire` itself.

use super::WireError;

pub(super) const WT_VARINT: u8 = 0;
pub(super) const WT_I64: u8 = 1;
pub(super) const WT_LEN: u8 = 2;
pub(super) const WT_SGROUP: u8 = 3;
pub(super) const WT_EGROUP: u8 = 4;
pub(super) const WT_I32: u8 = 5;

/// The largest field number protobuf allows.
const MAX_FIELD: u64 = (1 << 29) - 1;

/// How deeply nested unknown groups may be before we give up. Go allows 10,000; nothing legitimate
/// in `p2p.proto` uses groups at all, so a small bound keeps the recursion shallow.
const MAX_GROUP_DEPTH: u32 = 64;

/// Bytes taken by `v` as a varint: 1 to 10.
pub(super) const fn varint_len(v: u64) -> u64 {
    // `| 1` so that 0 counts as one significant bit.
    let bits = 64 - (v | 1).leading_zeros() as u64;
    bits.div_ceil(7)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// Bytes taken by a field's tag.
pub(super) const fn tag_len(field: u32) -> u64 {
    varint_len((field as u64) << 3)
}

/// Bytes taken by a length-delimited field (string, bytes or sub-message) with `n` bytes of content.
pub(super) const fn len_field_len(field: u32, n: u64) -> u64 {
    tag_len(field) + varint_len(n) + n
}

pub(super) fn put_len_field(out: &mut Vec<u8>, field: u32, content: &[u8]) {
    put_tag(out, field, WT_LEN);
    put_varint(out, content.len() as u64);
    out.extend_from_slice(content);
}

/// Bytes taken by a proto3 varint scalar: nothing when it has the default value 0.
pub(super) const fn varint_field_len(field: u32, v: u64) -> u64 {
    if v == 0 { 0 } else { tag_len(field) + varint_len(v) }
}

/// Writes a proto3 varint scalar, omitting the default value 0 as Go's `proto.Marshal` does.
pub(super) fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, WT_VARINT);
        put_varint(out, v);
    }
}

/// A cursor over one complete, already-buffered protobuf message.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            // The 10th byte holds bit 63 only; anything more does not fit a u64.
            if i == 9 && b > 1 {
                return Err(WireError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        // Either the message ended inside the varint, or the 10th byte still had its continuation bit.
        if self.buf.len() >= 10 { Err(WireError::VarintOverflow) } else { Err(WireError::TruncatedVarint) }
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    pub(super) fn next_field(&mut self) -> Result<Option<(u32, u8)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 || field > MAX_FIELD {
            return Err(WireError::InvalidFieldNumber(field));
        }
        // Both casts are lossless: field ≤ 2²⁹−1 and the wire type is 3 bits.
        Ok(Some((field as u32, (tag & 7) as u8)))
    }

    /// The content of a length-delimited field whose tag was just read.
    pub(super) fn len_delimited(&mut self, field: u32) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(WireError::TruncatedField { field, len, available: self.buf.len() });
        }
        // Lossless: len ≤ buf.len(), a usize.
        let (content, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(content)
    }

    fn fixed(&mut self, field: u32, n: usize) -> Result<(), WireError> {
        if self.buf.len() < n {
            return Err(WireError::TruncatedField { field, len: n as u64, available: self.buf.len() });
        }
        self.buf = &self.buf[n..];
        Ok(())
    }

    /// Skips the value of a field we do not know (or that came with an unexpected wire type, which
    /// Go also treats as unknown).
    pub(super) fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), WireError> {
        self.skip_nested(field, wire_type, 0)
    }

    fn skip_nested(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), WireError> {
        match wire_type {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.fixed(field, 8),
            WT_LEN => self.len_delimited(field).map(drop),
            WT_I32 => self.fixed(field, 4),
            WT_SGROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(WireError::NestingTooDeep);
                }
                loop {
                    let (f, wt) = self.next_field()?.ok_or(WireError::UnterminatedGroup(field))?;
                    if wt == WT_EGROUP {
                        return if f == field { Ok(()) } else { Err(WireError::UnterminatedGroup(field)) };
                    }
                    self.skip_nested(f, wt, depth + 1)?;
                }
            }
            // An end-group marker with no group open.
            WT_EGROUP => Err(WireError::UnexpectedEndGroup(field)),
            other => Err(WireError::UnknownWireType { field, wire_type: other }),
        }
    }
}

/// Go's `int32` decoding: the low 32 bits of the varint, two's complement (negative values are sent
/// as 10-byte varints).
pub(super) fn as_int32(v: u64) -> i32 {
    v as u32 as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_encoding() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len() as u64, varint_len(v), "{v}");
            assert_eq!(Reader::new(&out).varint(), Ok(v));
        }
    }

    #[test]
    fn malformed_varints_are_errors() {
        assert_eq!(Reader::new(&[0x80, 0x80]).varint(), Err(WireError::TruncatedVarint));
        let mut eleven = vec![0xff; 10];
        eleven.push(0);
        assert_eq!(Reader::new(&eleven).varint(), Err(WireError::VarintOverflow));
        let mut tenth_too_big = vec![0xff; 9];
        tenth_too_big.push(2);
        assert_eq!(Reader::new(&tenth_too_big).varint(), Err(WireError::VarintOverflow));
    }
}
