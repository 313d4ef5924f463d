//! `p2p.Message` ⇄ [`Message`]: the protobuf part of a frame, following `proto/p2p/p2p.proto`.
//!
//! Encoding matches Go's `proto.Marshal` byte for byte: fields in number order, proto3 default values
//! (0, "", the BITFIELD type) omitted, a sub-message emitted whenever Kraken sets it — even when empty,
//! as for ANNOUNCE_PIECE of piece 0 — and no sub-message for COMPLETE (Kraken's `NewCompleteMessage`
//! sets none). Decoding follows proto3: fields in any order, last scalar wins, repeated sub-messages
//! merge, unknown fields and fields with an unexpected wire type are skipped.
//!
//! ## Kept by hand, for Kraken's bytes
//!
//! No protobuf crate or code generator is used: the frames go to real Kraken peers, so the encoding
//! must be Go's `proto.Marshal` output for `p2p.proto` (field order, omitted defaults, the empty
//! sub-message of ANNOUNCE_PIECE 0, none for COMPLETE), and decoding must accept and reject what
//! Go's unmarshal does (negative `int32` values, non-UTF-8 strings, unknown error codes, unknown
//! fields). A generated codec would bring its own choices on each point, to be pinned the same way.
//! The one departure: map entries are written sorted by peer id, where Go's order is random.
//!
//! Pinned in `wire/tests.rs`: byte for byte by `piece_request_bytes_are_pinned`,
//! `small_messages_are_pinned`, `handshake_bytes_are_pinned`,
//! `tagged_payload_carries_a_marker_and_no_trailer` and `bittorrent_extensions_are_a_type_only`; the
//! decoding rules by `repeated_sub_messages_merge`, `complete_accepts_an_empty_sub_message`,
//! `unknown_fields_and_wire_types_are_skipped`, `malformed_protobuf_is_an_error`,
//! `bad_handshake_fields_are_errors`, `values_beyond_int32_are_refused` and
//! `frame_limit_is_kraken_32_kib_both_ways`. Their expected bytes are derived by hand from
//! `p2p.proto` and annotated field by field; none was captured from Go's `proto.Marshal` or from a
//! Kraken peer.

use std::collections::BTreeMap;

use super::proto::{
    Reader, WT_LEN, WT_VARINT, as_int32, len_field_len, put_len_field, put_tag, put_varint, put_varint_field,
    varint_field_len,
};
use super::{DecoderLimits, TAG_MARKER_PREFIX, WireError};
use crate::bitfield::Bitfield;
use crate::message::{ErrorCode, Handshake, Message, MessageKind, Payload};
use crate::types::{Digest, InfoHash, PeerId};

// `Message` fields.
const MSG_VERSION: u32 = 1;
const MSG_TYPE: u32 = 2;
const MSG_BITFIELD: u32 = 3;
const MSG_PIECE_REQUEST: u32 = 4;
const MSG_PIECE_PAYLOAD: u32 = 5;
const MSG_ANNOUNCE_PIECE: u32 = 6;
const MSG_CANCEL_PIECE: u32 = 7;
const MSG_ERROR: u32 = 8;
const MSG_COMPLETE: u32 = 9;

// `BitfieldMessage` fields.
const BF_INFO_HASH: u32 = 2;
const BF_NAME: u32 = 3;
const BF_PEER_ID: u32 = 4;
const BF_BITFIELD: u32 = 5;
const BF_NAMESPACE: u32 = 6;
const BF_REMOTE: u32 = 7;
// Map entries (`map<string, bytes>` is sugar for a repeated message with these two fields).
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;

// `PieceRequestMessage`, `PiecePayloadMessage`, `AnnouncePieceMessage`, `CancelPieceMessage`.
const PIECE_INDEX: u32 = 2;
const PIECE_OFFSET: u32 = 3;
const PIECE_LENGTH: u32 = 4;
const PIECE_DIGEST: u32 = 5;

// `ErrorMessage`.
const ERR_ERROR: u32 = 2;
const ERR_INDEX: u32 = 3;
const ERR_CODE: u32 = 4;

/// Hex lengths of the handshake's identifiers.
const PEER_ID_HEX: u64 = 40;
const INFO_HASH_HEX: u64 = 40;
const DIGEST_HEX: u64 = 64;

/// `shoal-tag:` followed by 8 hex digits.
const TAG_MARKER_LEN: u64 = TAG_MARKER_PREFIX.len() as u64 + 8;

/// Whether a tagged payload is written with its marker (real encoding) or counted as the equivalent
/// real-bytes message (bandwidth accounting, see [`Message::wire_len`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Encode,
    KrakenEquivalent,
}

/// The sub-message field a message kind travels in; `None` for COMPLETE and shoal's extensions.
fn sub_field(kind: MessageKind) -> Option<u32> {
    match kind {
        MessageKind::Bitfield => Some(MSG_BITFIELD),
        MessageKind::PieceRequest => Some(MSG_PIECE_REQUEST),
        MessageKind::PiecePayload => Some(MSG_PIECE_PAYLOAD),
        MessageKind::AnnouncePiece => Some(MSG_ANNOUNCE_PIECE),
        MessageKind::CancelPiece => Some(MSG_CANCEL_PIECE),
        MessageKind::Error => Some(MSG_ERROR),
        // Like COMPLETE, shoal's extensions are a type and nothing else.
        MessageKind::Complete
        | MessageKind::Choke
        | MessageKind::Unchoke
        | MessageKind::Interested
        | MessageKind::NotInterested => None,
    }
}

/// Length of the protobuf part, computed without allocating.
pub(super) fn header_len(msg: &Message, mode: Mode) -> u64 {
    let kind = msg.kind();
    let ty = varint_field_len(MSG_TYPE, kind as u64);
    match sub_field(kind) {
        Some(field) => ty + len_field_len(field, body_len(msg, mode)),
        None => ty,
    }
}

fn body_len(msg: &Message, mode: Mode) -> u64 {
    match msg {
        Message::Bitfield(h) => {
            let remote: u64 = h
                .remote_bitfields
                .values()
                .map(|b| len_field_len(BF_REMOTE, entry_len(b.encoded_len() as u64)))
                .sum();
            len_field_len(BF_INFO_HASH, INFO_HASH_HEX)
                + len_field_len(BF_NAME, DIGEST_HEX)
                + len_field_len(BF_PEER_ID, PEER_ID_HEX)
                + len_field_len(BF_BITFIELD, h.bitfield.encoded_len() as u64)
                + string_field_len(BF_NAMESPACE, &h.namespace)
                + remote
        }
        Message::PieceRequest { index, offset, length } => {
            varint_field_len(PIECE_INDEX, u64::from(*index))
                + varint_field_len(PIECE_OFFSET, *offset)
                + varint_field_len(PIECE_LENGTH, *length)
        }
        Message::PiecePayload { index, offset, payload } => {
            let marker = match (payload, mode) {
                (Payload::Tagged { .. }, Mode::Encode) => len_field_len(PIECE_DIGEST, TAG_MARKER_LEN),
                _ => 0,
            };
            varint_field_len(PIECE_INDEX, u64::from(*index))
                + varint_field_len(PIECE_OFFSET, *offset)
                + varint_field_len(PIECE_LENGTH, payload.len())
                + marker
        }
        Message::AnnouncePiece { index } | Message::CancelPiece { index } => {
            varint_field_len(PIECE_INDEX, u64::from(*index))
        }
        Message::Error { index, code, message } => {
            string_field_len(ERR_ERROR, message)
                + varint_field_len(ERR_INDEX, u64::from(*index))
                + varint_field_len(ERR_CODE, error_code_value(*code))
        }
        Message::Complete
        | Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested => 0,
    }
}

/// A map entry: the 40-hex peer id key and the bitfield value, both always present.
fn entry_len(value_len: u64) -> u64 {
    len_field_len(ENTRY_KEY, PEER_ID_HEX) + len_field_len(ENTRY_VALUE, value_len)
}

/// A proto3 string field: omitted when empty.
fn string_field_len(field: u32, s: &str) -> u64 {
    if s.is_empty() { 0 } else { len_field_len(field, s.len() as u64) }
}

fn put_string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_len_field(out, field, s.as_bytes());
    }
}

fn error_code_value(code: ErrorCode) -> u64 {
    match code {
        ErrorCode::PieceRequestFailed => 0,
    }
}

/// Checks that a value fits Kraken's `int32` fields; Go would silently truncate it.
fn check_int32(field: &'static str, v: u64) -> Result<(), WireError> {
    if v > i32::MAX as u64 { Err(WireError::ValueOutOfRange { field, value: v }) } else { Ok(()) }
}

fn check_ranges(msg: &Message) -> Result<(), WireError> {
    match msg {
        Message::PieceRequest { index, offset, length } => {
            check_int32("index", u64::from(*index))?;
            check_int32("offset", *offset)?;
            check_int32("length", *length)
        }
        Message::PiecePayload { index, offset, payload } => {
            check_int32("index", u64::from(*index))?;
            check_int32("offset", *offset)?;
            check_int32("length", payload.len())
        }
        Message::AnnouncePiece { index } | Message::CancelPiece { index } | Message::Error { index, .. } => {
            check_int32("index", u64::from(*index))
        }
        Message::Bitfield(_)
        | Message::Complete
        | Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested => Ok(()),
    }
}

/// Appends the protobuf part of `msg` (no length prefix). Checks value ranges first and writes nothing
/// on error. Returns the number of bytes written. Under [`Mode::KrakenEquivalent`] a tagged payload is
/// written as the header of the real payload of its length (no marker).
pub(super) fn write_header(msg: &Message, out: &mut Vec<u8>, mode: Mode) -> Result<u64, WireError> {
    check_ranges(msg)?;
    let start = out.len();
    let kind = msg.kind();
    put_varint_field(out, MSG_TYPE, kind as u64);
    if let Some(field) = sub_field(kind) {
        put_tag(out, field, WT_LEN);
        put_varint(out, body_len(msg, mode));
        write_body(msg, out, mode);
    }
    let written = (out.len() - start) as u64;
    debug_assert_eq!(written, header_len(msg, mode), "size computation disagrees with the writer");
    Ok(written)
}

fn write_body(msg: &Message, out: &mut Vec<u8>, mode: Mode) {
    match msg {
        Message::Bitfield(h) => {
            put_len_field(out, BF_INFO_HASH, h.info_hash.hex().as_bytes());
            put_len_field(out, BF_NAME, h.digest.hex().as_bytes());
            put_len_field(out, BF_PEER_ID, h.peer_id.hex().as_bytes());
            put_len_field(out, BF_BITFIELD, &h.bitfield.to_bytes());
            put_string_field(out, BF_NAMESPACE, &h.namespace);
            // Go writes map entries in random order; a BTreeMap gives a deterministic one.
            for (peer, bitfield) in &h.remote_bitfields {
                let value = bitfield.to_bytes();
                put_tag(out, BF_REMOTE, WT_LEN);
                put_varint(out, entry_len(value.len() as u64));
                put_len_field(out, ENTRY_KEY, peer.hex().as_bytes());
                put_len_field(out, ENTRY_VALUE, &value);
            }
        }
        Message::PieceRequest { index, offset, length } => {
            put_varint_field(out, PIECE_INDEX, u64::from(*index));
            put_varint_field(out, PIECE_OFFSET, *offset);
            put_varint_field(out, PIECE_LENGTH, *length);
        }
        Message::PiecePayload { index, offset, payload } => {
            put_varint_field(out, PIECE_INDEX, u64::from(*index));
            put_varint_field(out, PIECE_OFFSET, *offset);
            put_varint_field(out, PIECE_LENGTH, payload.len());
            if let (Payload::Tagged { tag, .. }, Mode::Encode) = (payload, mode) {
                put_tag(out, PIECE_DIGEST, WT_LEN);
                put_varint(out, TAG_MARKER_LEN);
                out.extend_from_slice(TAG_MARKER_PREFIX.as_bytes());
                let mut hex = [0u8; 8];
                hex::encode_to_slice(tag.to_be_bytes(), &mut hex).expect("4 bytes always make 8 hex digits");
                out.extend_from_slice(&hex);
            }
        }
        Message::AnnouncePiece { index } | Message::CancelPiece { index } => {
            put_varint_field(out, PIECE_INDEX, u64::from(*index));
        }
        Message::Error { index, code, message } => {
            put_string_field(out, ERR_ERROR, message);
            put_varint_field(out, ERR_INDEX, u64::from(*index));
            put_varint_field(out, ERR_CODE, error_code_value(*code));
        }
        Message::Complete
        | Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested => {}
    }
}

/// What a decoded header asks of the decoder next.
#[derive(Debug)]
pub(super) enum Decoded {
    /// A whole message (including tagged payloads, which have no trailer).
    Message(Message),
    /// A real PIECE_PAYLOAD header: `len` raw bytes follow.
    Payload { index: u32, offset: u64, len: u64 },
}

/// The fields of `BitfieldMessage` as they appear on the wire, before any semantic check.
#[derive(Default)]
struct RawBitfield<'a> {
    info_hash: &'a str,
    name: &'a str,
    peer_id: &'a str,
    bitfield: &'a [u8],
    namespace: &'a str,
    /// Later duplicates of a key replace earlier ones, as when Go fills its map.
    remote: BTreeMap<&'a str, &'a [u8]>,
}

/// The fields shared by the piece messages and `ErrorMessage` (field 2 is a string there).
#[derive(Default)]
struct RawPiece<'a> {
    index: u64,
    offset: u64,
    length: u64,
    digest: &'a str,
    error: &'a str,
    code: u64,
}

/// Parses the protobuf part of one frame.
pub(super) fn decode_header(buf: &[u8], limits: &DecoderLimits) -> Result<Decoded, WireError> {
    let mut r = Reader::new(buf);
    let mut ty = 0u64;
    let mut bitfield: Option<RawBitfield> = None;
    // Indexed by `field - MSG_PIECE_REQUEST`: request, payload, announce, cancel, error.
    let mut pieces: [Option<RawPiece>; 5] = Default::default();
    while let Some((field, wt)) = r.next_field()? {
        match (field, wt) {
            (MSG_VERSION, WT_LEN) => {
                utf8(r.len_delimited(field)?, "version")?;
            }
            (MSG_TYPE, WT_VARINT) => ty = r.varint()?,
            (MSG_BITFIELD, WT_LEN) => {
                parse_bitfield(r.len_delimited(field)?, bitfield.get_or_insert_default())?
            }
            (MSG_PIECE_REQUEST..=MSG_ERROR, WT_LEN) => {
                let raw = pieces[(field - MSG_PIECE_REQUEST) as usize].get_or_insert_default();
                parse_piece(r.len_delimited(field)?, raw, field == MSG_ERROR)?
            }
            (MSG_COMPLETE, WT_LEN) => {
                // `CompleteMessage` has no fields; still check that its content is well-formed.
                let mut sub = Reader::new(r.len_delimited(field)?);
                while let Some((f, wt)) = sub.next_field()? {
                    sub.skip(f, wt)?;
                }
            }
            _ => r.skip(field, wt)?,
        }
    }
    let ty = as_int32(ty);
    let kind = *usize::try_from(ty)
        .ok()
        .and_then(|i| MessageKind::ALL.get(i))
        .ok_or(WireError::UnknownMessageType(ty))?;
    let mut piece = |kind: MessageKind| {
        let field = sub_field(kind).expect("only called for kinds with a sub-message");
        pieces[(field - MSG_PIECE_REQUEST) as usize].take().ok_or(WireError::MissingSubMessage(kind))
    };
    let msg = match kind {
        MessageKind::Bitfield => {
            let raw = bitfield.ok_or(WireError::MissingSubMessage(kind))?;
            Message::Bitfield(Box::new(handshake(raw, limits)?))
        }
        MessageKind::PieceRequest => {
            let p = piece(kind)?;
            Message::PieceRequest {
                index: non_negative("index", p.index)?,
                offset: non_negative("offset", p.offset)?.into(),
                length: non_negative("length", p.length)?.into(),
            }
        }
        MessageKind::PiecePayload => {
            let p = piece(kind)?;
            let index = non_negative("index", p.index)?;
            let offset = non_negative("offset", p.offset)?.into();
            let len = u64::from(non_negative("length", p.length)?);
            if len > limits.max_payload {
                return Err(WireError::PayloadTooLarge { len, max: limits.max_payload });
            }
            match p.digest.strip_prefix(TAG_MARKER_PREFIX) {
                Some(hex_tag) => {
                    if !limits.accept_tagged {
                        return Err(WireError::TaggedRefused);
                    }
                    let mut tag = [0u8; 4];
                    if hex_tag.len() != 8 || hex::decode_to_slice(hex_tag, &mut tag).is_err() {
                        return Err(WireError::BadTagMarker);
                    }
                    let payload = Payload::Tagged { len, tag: u32::from_be_bytes(tag) };
                    Message::PiecePayload { index, offset, payload }
                }
                // Kraken never sets `digest`; any other value is ignored.
                None => return Ok(Decoded::Payload { index, offset, len }),
            }
        }
        MessageKind::AnnouncePiece => {
            Message::AnnouncePiece { index: non_negative("index", piece(kind)?.index)? }
        }
        MessageKind::CancelPiece => {
            Message::CancelPiece { index: non_negative("index", piece(kind)?.index)? }
        }
        MessageKind::Error => {
            let p = piece(kind)?;
            let code = match as_int32(p.code) {
                0 => ErrorCode::PieceRequestFailed,
                other => return Err(WireError::UnknownErrorCode(other)),
            };
            Message::Error { index: non_negative("index", p.index)?, code, message: p.error.to_owned() }
        }
        MessageKind::Complete => Message::Complete,
        MessageKind::Choke => Message::Choke,
        MessageKind::Unchoke => Message::Unchoke,
        MessageKind::Interested => Message::Interested,
        MessageKind::NotInterested => Message::NotInterested,
    };
    Ok(Decoded::Message(msg))
}

fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, WireError> {
    // proto3 `string` fields must hold UTF-8; Go's unmarshal rejects anything else.
    std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field })
}

fn non_negative(field: &'static str, v: u64) -> Result<u32, WireError> {
    let v = as_int32(v);
    u32::try_from(v).map_err(|_| WireError::NegativeValue { field, value: v })
}

fn parse_bitfield<'a>(buf: &'a [u8], raw: &mut RawBitfield<'a>) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while let Some((field, wt)) = r.next_field()? {
        match (field, wt) {
            (BF_INFO_HASH, WT_LEN) => raw.info_hash = utf8(r.len_delimited(field)?, "infoHash")?,
            (BF_NAME, WT_LEN) => raw.name = utf8(r.len_delimited(field)?, "name")?,
            (BF_PEER_ID, WT_LEN) => raw.peer_id = utf8(r.len_delimited(field)?, "peerID")?,
            (BF_BITFIELD, WT_LEN) => raw.bitfield = r.len_delimited(field)?,
            (BF_NAMESPACE, WT_LEN) => raw.namespace = utf8(r.len_delimited(field)?, "namespace")?,
            (BF_REMOTE, WT_LEN) => {
                // A missing key or value is the empty default, as for any proto3 field.
                let (mut key, mut value): (&str, &[u8]) = ("", &[]);
                let mut entry = Reader::new(r.len_delimited(field)?);
                while let Some((f, wt)) = entry.next_field()? {
                    match (f, wt) {
                        (ENTRY_KEY, WT_LEN) => {
                            key = utf8(entry.len_delimited(f)?, "remoteBitfieldBytes key")?
                        }
                        (ENTRY_VALUE, WT_LEN) => value = entry.len_delimited(f)?,
                        _ => entry.skip(f, wt)?,
                    }
                }
                raw.remote.insert(key, value);
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(())
}

fn parse_piece<'a>(buf: &'a [u8], raw: &mut RawPiece<'a>, is_error: bool) -> Result<(), WireError> {
    let mut r = Reader::new(buf);
    while let Some((field, wt)) = r.next_field()? {
        match (is_error, field, wt) {
            (false, PIECE_INDEX, WT_VARINT) | (true, ERR_INDEX, WT_VARINT) => raw.index = r.varint()?,
            (false, PIECE_OFFSET, WT_VARINT) => raw.offset = r.varint()?,
            (false, PIECE_LENGTH, WT_VARINT) => raw.length = r.varint()?,
            (false, PIECE_DIGEST, WT_LEN) => raw.digest = utf8(r.len_delimited(field)?, "digest")?,
            (true, ERR_ERROR, WT_LEN) => raw.error = utf8(r.len_delimited(field)?, "error")?,
            (true, ERR_CODE, WT_VARINT) => raw.code = r.varint()?,
            _ => r.skip(field, wt)?,
        }
    }
    Ok(())
}

fn handshake(raw: RawBitfield, limits: &DecoderLimits) -> Result<Handshake, WireError> {
    let bitfield = |bytes: &[u8], field: &'static str| {
        Bitfield::from_bytes(bytes, limits.max_pieces)
            .map_err(|source| WireError::BadBitfield { field, source })
    };
    let peer_id =
        |s: &str, field: &'static str| PeerId::from_hex(s).map_err(|_| WireError::InvalidHexId { field });
    // Checked in the order Kraken's `handshakeFromP2PMessage` checks them.
    let peer = peer_id(raw.peer_id, "peerID")?;
    let info_hash =
        InfoHash::from_hex(raw.info_hash).map_err(|_| WireError::InvalidHexId { field: "infoHash" })?;
    let digest = Digest::from_hex(raw.name).map_err(|_| WireError::InvalidHexId { field: "name" })?;
    let own = bitfield(raw.bitfield, "bitfieldBytes")?;
    let mut remote_bitfields = BTreeMap::new();
    for (key, value) in raw.remote {
        remote_bitfields
            .insert(peer_id(key, "remoteBitfieldBytes key")?, bitfield(value, "remoteBitfieldBytes")?);
    }
    Ok(Handshake {
        peer_id: peer,
        info_hash,
        digest,
        bitfield: own,
        remote_bitfields,
        namespace: raw.namespace.to_owned(),
    })
}
