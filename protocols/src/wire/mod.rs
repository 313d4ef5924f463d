//! The byte encoding of [`Message`]: Kraken's frames, wire-compatible with real Kraken peers.
//!
//! # Frame format (Kraken's `lib/torrent/scheduler/conn/message.go`)
//!
//! ```text
//! u32 big-endian N | N bytes: proto.Marshal(p2p.Message) | PIECE_PAYLOAD only: piecePayload.length raw bytes
//! ```
//!
//! The protobuf part is proto3 for `proto/p2p/p2p.proto`, encoded and decoded by hand (no code
//! generator) in the private modules `codec` and `proto`; the output is byte-identical to Go's
//! `proto.Marshal` up to the order of map entries, which Go randomises and shoal sorts. A reader refuses N above
//! [`MAX_MESSAGE_SIZE`] (32 KiB, Kraken's `maxMessageSize`); [`encode`] refuses to produce such a frame.
//! Why no protobuf crate is used, and which tests pin the bytes, is in the doc of `codec` and `proto`.
//!
//! # The shoal extension: tagged payloads
//!
//! In simulation a piece's content is a [`Payload::Tagged`]: a length and the CRC32 the bytes would
//! have. Between shoal nodes (e.g. the turmoil engine) it is sent as a PIECE_PAYLOAD header whose
//! `digest` field (5, a string Kraken never sets) holds `shoal-tag:<8 lowercase hex digits of the
//! tag>`, with `length` = the declared length and **no trailer bytes**. The decoder turns such a header
//! back into [`Payload::Tagged`]; any other `digest` value is ignored, as Kraken ignores it. A real
//! Kraken peer would read `length` trailer bytes that never come, so tagged payloads must never be sent
//! to one. Drivers facing untrusted peers can refuse them with [`DecoderLimits::accept_tagged`].
//!
//! # Sizes
//!
//! [`Message::wire_len`] is what a real Kraken peer would put on the wire for the message (a tagged
//! payload counts as its real-bytes equivalent); [`encoded_len`] is what [`encode`] actually writes.

mod codec;
mod proto;
#[cfg(test)]
mod tests;

use bytes::{Buf, BytesMut};

use crate::bitfield::BitfieldError;
use crate::message::{Message, MessageKind, Payload};

use codec::{Decoded, Mode};

/// Kraken's `maxMessageSize`: the largest protobuf part a reader accepts, in bytes.
pub const MAX_MESSAGE_SIZE: u32 = 32 * 1024;

/// Default [`DecoderLimits::max_payload`]: 64 MiB, far above Kraken's usual 4 MiB pieces.
pub const DEFAULT_MAX_PAYLOAD: u64 = 64 * 1024 * 1024;

/// Default [`DecoderLimits::max_pieces`]: 2²⁴ pieces (16 TiB at 1 MiB pieces).
pub const DEFAULT_MAX_PIECES: u32 = 1 << 24;

/// The prefix of a tagged payload's `digest` marker (see the module documentation).
pub const TAG_MARKER_PREFIX: &str = "shoal-tag:";

/// Bytes of the frame's length prefix.
const PREFIX_LEN: usize = 4;

/// What was wrong with a message to encode or with received bytes. After a decoding error the
/// connection is to be closed: the [`Decoder`] stays failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The protobuf part is longer than the frame limit (on encoding, [`MAX_MESSAGE_SIZE`]; on
    /// decoding, [`DecoderLimits::max_header`], checked on the length prefix alone).
    #[error("protobuf part of {len} bytes exceeds the frame limit of {max}")]
    FrameTooLarge {
        /// The protobuf part's length, in bytes.
        len: u64,
        /// The limit, in bytes.
        max: u32,
    },
    /// A value to encode is above `i32::MAX`, which Kraken's `int32` field would truncate.
    #[error("{field} = {value} does not fit Kraken's int32 field")]
    ValueOutOfRange {
        /// The proto field's name (`index`, `offset`, `length`).
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// The input ends inside a varint.
    #[error("message ends inside a varint")]
    TruncatedVarint,
    /// A varint runs past 10 bytes, or its 10th byte carries more than the 64th bit.
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    /// A field number of 0 or above 2²⁹−1; holds the number read.
    #[error("invalid protobuf field number {0}")]
    InvalidFieldNumber(u64),
    /// A length-delimited or fixed-size field runs past the end of its message.
    #[error("field {field} announces {len} bytes but only {available} remain")]
    TruncatedField {
        /// The field number.
        field: u32,
        /// Bytes the field needs.
        len: u64,
        /// Bytes left in the enclosing message.
        available: usize,
    },
    /// Wire type 6 or 7, which protobuf does not define.
    #[error("field {field} has unknown wire type {wire_type}")]
    UnknownWireType {
        /// The field number.
        field: u32,
        /// The wire type read.
        wire_type: u8,
    },
    /// A start-group marker with no matching end-group (or a mismatched one); holds the group's
    /// field number.
    #[error("group {0} is not terminated")]
    UnterminatedGroup(u32),
    /// An end-group marker with no group open; holds its field number.
    #[error("end of group {0} without a matching start")]
    UnexpectedEndGroup(u32),
    /// Unknown groups nested more than 64 deep (Go allows 10,000; `p2p.proto` uses none).
    #[error("unknown fields nested too deeply")]
    NestingTooDeep,
    /// A `type` outside 0–10; holds it as Go's `int32`.
    #[error("unknown message type {0}")]
    UnknownMessageType(i32),
    /// An ERROR with a code other than `PIECE_REQUEST_FAILED` (0); holds it as Go's `int32`.
    #[error("unknown error code {0}")]
    UnknownErrorCode(i32),
    /// A message whose type needs a sub-message (every type but COMPLETE and shoal's extensions)
    /// came without it.
    #[error("{0:?} message without its sub-message")]
    MissingSubMessage(MessageKind),
    /// A proto3 `string` field is not UTF-8 (Go's unmarshal refuses it too).
    #[error("string field {field} is not UTF-8")]
    InvalidUtf8 {
        /// The proto field's name.
        field: &'static str,
    },
    /// A handshake identifier is not the hex of the right length (40 for peer ids and the info
    /// hash, 64 for `name`).
    #[error("field {field} is not a valid hex identifier")]
    InvalidHexId {
        /// The proto field's name (`peerID`, `infoHash`, `name`, `remoteBitfieldBytes key`).
        field: &'static str,
    },
    /// An index, offset or length that Go reads as a negative `int32`.
    #[error("negative {field}: {value}")]
    NegativeValue {
        /// The proto field's name.
        field: &'static str,
        /// The value as Go's `int32`.
        value: i32,
    },
    /// A handshake bitfield did not parse, or has more than [`DecoderLimits::max_pieces`] bits.
    #[error("bad bitfield in {field}: {source}")]
    BadBitfield {
        /// The proto field's name (`bitfieldBytes`, `remoteBitfieldBytes`).
        field: &'static str,
        /// What was wrong with it.
        source: BitfieldError,
    },
    /// A PIECE_PAYLOAD declares more than [`DecoderLimits::max_payload`] bytes.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The declared payload length, in bytes.
        len: u64,
        /// The limit, in bytes.
        max: u64,
    },
    /// A `digest` starting with [`TAG_MARKER_PREFIX`] not followed by exactly 8 hex digits.
    #[error("malformed shoal tag marker in a piece payload's digest")]
    BadTagMarker,
    /// A tagged payload reached a decoder whose [`DecoderLimits::accept_tagged`] is false.
    #[error("tagged (simulated) payload refused by this decoder")]
    TaggedRefused,
    /// `next_message` and `next_chunk` were both called inside one payload (a caller's bug).
    #[error("next_message and next_chunk mixed inside a payload")]
    MixedUse,
    /// [`Decoder::finish`] was called inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    UnexpectedEof {
        /// Bytes buffered and not returned as messages.
        buffered: usize,
    },
}

/// Appends `msg`'s frame and, for a real PIECE_PAYLOAD, its payload bytes to `out`.
///
/// Fails, leaving `out` unchanged, when the protobuf part would exceed [`MAX_MESSAGE_SIZE`] (a
/// handshake with too many or too large bitfields) or a number does not fit Kraken's `int32` fields.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    encode_header(msg, out)?;
    if let Message::PiecePayload { payload: Payload::Bytes(bytes), .. } = msg {
        out.extend_from_slice(bytes);
    }
    Ok(())
}

/// Like [`encode`], but without a real payload's trailer bytes, so that a socket driver can write
/// them from its own buffer without a copy. The trailer must follow immediately.
pub fn encode_header(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    write_frame_header(msg, out, Mode::Encode)
}

/// Like [`encode_header`], but a tagged payload gets the header of the real payload of its length,
/// as Kraken frames it, without shoal's marker: for a socket driver that holds the piece's bytes
/// outside the state machine (on disk) and writes its `len` bytes right after. Other messages are
/// framed as [`encode_header`] frames them.
pub fn encode_real_header(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    write_frame_header(msg, out, Mode::KrakenEquivalent)
}

fn write_frame_header(msg: &Message, out: &mut Vec<u8>, mode: Mode) -> Result<(), WireError> {
    let len = codec::header_len(msg, mode);
    if len > u64::from(MAX_MESSAGE_SIZE) {
        return Err(WireError::FrameTooLarge { len, max: MAX_MESSAGE_SIZE });
    }
    let start = out.len();
    // Lossless: len ≤ MAX_MESSAGE_SIZE.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if let Err(e) = codec::write_header(msg, out, mode) {
        out.truncate(start);
        return Err(e);
    }
    Ok(())
}

/// [`encode`] into a new vector of exactly [`encoded_len`] bytes.
pub fn encode_to_vec(msg: &Message) -> Result<Vec<u8>, WireError> {
    // The capacity is a hint only; a real payload's length is bounded by the message itself.
    let mut out = Vec::with_capacity(usize::try_from(encoded_len(msg)).unwrap_or(0));
    encode(msg, &mut out)?;
    Ok(out)
}

/// The number of bytes [`encode`] appends for `msg` when it succeeds. For a tagged payload this is the
/// header with its marker and no trailer, unlike [`Message::wire_len`].
pub fn encoded_len(msg: &Message) -> u64 {
    let trailer = match msg {
        Message::PiecePayload { payload: Payload::Bytes(b), .. } => b.len() as u64,
        _ => 0,
    };
    PREFIX_LEN as u64 + codec::header_len(msg, Mode::Encode) + trailer
}

impl Message {
    /// The bytes this message takes on a Kraken connection: the 4-byte prefix, the protobuf part and,
    /// for PIECE_PAYLOAD, the payload.
    ///
    /// A [`Payload::Tagged`] counts as the real-bytes message of the same length would (no marker,
    /// `len` trailer bytes), so that simulated bandwidth matches what Kraken would send; the tagged
    /// frame actually encoded is smaller ([`encoded_len`]). Computed arithmetically without
    /// allocating: the simulator calls it for every message. For a message [`encode`] would refuse
    /// (oversized or out-of-range), the value is what the frame would have been.
    pub fn wire_len(&self) -> u64 {
        let trailer = match self {
            Message::PiecePayload { payload, .. } => payload.len(),
            _ => 0,
        };
        PREFIX_LEN as u64 + codec::header_len(self, Mode::KrakenEquivalent) + trailer
    }
}

/// What a [`Decoder`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Largest protobuf part, in bytes. Default [`MAX_MESSAGE_SIZE`], Kraken's.
    pub max_header: u32,
    /// Largest PIECE_PAYLOAD length (real or tagged), checked before any byte of it is buffered.
    /// Default [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: u64,
    /// Most pieces in any bitfield of a handshake. Default [`DEFAULT_MAX_PIECES`]; a caller who knows
    /// the torrent's piece count can set it exactly.
    pub max_pieces: u32,
    /// Whether tagged (simulated) payloads are accepted. Default true, for shoal-to-shoal links.
    pub accept_tagged: bool,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_header: MAX_MESSAGE_SIZE,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_pieces: DEFAULT_MAX_PIECES,
            accept_tagged: true,
        }
    }
}

/// Where the decoder is within the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Prefix,
    Header {
        len: usize,
    },
    Payload {
        index: u32,
        offset: u64,
        len: usize,
    },
    /// A real payload handed out in chunks ([`Decoder::next_chunk`]): `left` bytes to go.
    Streaming {
        left: usize,
    },
}

/// What [`Decoder::next_chunk`] yields: whole messages, and each real PIECE_PAYLOAD as its header,
/// its bytes in the pieces they arrived in, and its end — so that a receiver can write a piece
/// where it belongs as it arrives instead of holding all of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A message other than a real piece payload (tagged payloads included).
    Message(Message),
    /// A real PIECE_PAYLOAD begins: `len` bytes follow, as [`Chunk::PayloadData`], then
    /// [`Chunk::PayloadEnd`].
    PayloadStart {
        /// The piece.
        index: u32,
        /// The offset in the piece.
        offset: u64,
        /// The payload's length in bytes.
        len: u64,
    },
    /// The next bytes of the current payload (never empty).
    PayloadData(bytes::Bytes),
    /// The current payload's last byte has been handed out.
    PayloadEnd,
}

/// What parsing a frame's header found.
enum HeaderStep {
    Message(Message),
    Payload { index: u32, offset: u64, len: usize },
}

/// An incremental, sans-IO frame decoder: [`feed`](Decoder::feed) it bytes as they arrive, in any
/// chunking, then call [`next_message`](Decoder::next_message) until it returns `Ok(None)`.
///
/// The sequence of messages and errors does not depend on how the input was split. Memory is bounded
/// by what was fed: nothing is reserved from a length read off the wire. After an error the decoder
/// is failed for good: it returns the same error forever and drops further input.
pub struct Decoder {
    limits: DecoderLimits,
    buf: BytesMut,
    state: State,
    failed: Option<WireError>,
}

impl std::fmt::Debug for Decoder {
    /// Without the buffered bytes, which may be a whole piece.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("limits", &self.limits)
            .field("buffered_len", &self.buf.len())
            .field("state", &self.state)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DecoderLimits::default())
    }
}

impl Decoder {
    /// An idle decoder enforcing `limits`.
    pub fn new(limits: DecoderLimits) -> Self {
        Decoder { limits, buf: BytesMut::new(), state: State::Prefix, failed: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> &DecoderLimits {
        &self.limits
    }

    /// Changes the limits, e.g. `max_pieces` once the torrent is known. They apply from the next
    /// frame header parsed.
    pub fn limits_mut(&mut self) -> &mut DecoderLimits {
        &mut self.limits
    }

    /// Appends received bytes. Ignored once the decoder has failed.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete message: `Ok(None)` when more bytes are needed, `Err` when the input is
    /// malformed (then forever).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.step().inspect_err(|e| {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        })
    }

    /// Like [`next_message`](Decoder::next_message), but a real payload comes out in chunks as it
    /// arrives ([`Chunk`]) instead of whole: the decoder then holds at most what one read fed it.
    /// Use either this or `next_message` on one decoder, not both.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let State::Streaming { left } = self.state {
            if left == 0 {
                self.state = State::Prefix;
                return Ok(Some(Chunk::PayloadEnd));
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            let take = left.min(self.buf.len());
            self.state = State::Streaming { left: left - take };
            return Ok(Some(Chunk::PayloadData(self.buf.split_to(take).freeze())));
        }
        let step = self.step_until_payload().inspect_err(|e| {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        })?;
        Ok(match step {
            None => None,
            Some(Ok(msg)) => Some(Chunk::Message(msg)),
            Some(Err((index, offset, len))) => {
                self.state = State::Streaming { left: len };
                Some(Chunk::PayloadStart { index, offset, len: len as u64 })
            }
        })
    }

    /// [`step`](Decoder::step) that stops at a real payload's header: `Err((index, offset, len))`.
    #[allow(clippy::type_complexity)]
    fn step_until_payload(&mut self) -> Result<Option<Result<Message, (u32, u64, usize)>>, WireError> {
        if let State::Payload { .. } = self.state {
            // Only `next_message` gathers whole payloads.
            return Err(WireError::MixedUse);
        }
        Ok(match self.step_header()? {
            Some(HeaderStep::Message(m)) => Some(Ok(m)),
            Some(HeaderStep::Payload { index, offset, len }) => Some(Err((index, offset, len))),
            None => None,
        })
    }

    fn step(&mut self) -> Result<Option<Message>, WireError> {
        if matches!(self.state, State::Prefix | State::Header { .. }) {
            match self.step_header()? {
                Some(HeaderStep::Message(m)) => return Ok(Some(m)),
                Some(HeaderStep::Payload { index, offset, len }) => {
                    self.state = State::Payload { index, offset, len };
                }
                None => return Ok(None),
            }
        }
        match self.state {
            State::Payload { index, offset, len } => {
                if self.buf.len() < len {
                    return Ok(None);
                }
                let payload = Payload::Bytes(self.buf.split_to(len).freeze());
                self.state = State::Prefix;
                Ok(Some(Message::PiecePayload { index, offset, payload }))
            }
            // Only `next_chunk` streams.
            State::Streaming { .. } => Err(WireError::MixedUse),
            State::Prefix | State::Header { .. } => Ok(None),
        }
    }

    /// Parses frame prefixes and headers until a whole message or a real payload's header.
    fn step_header(&mut self) -> Result<Option<HeaderStep>, WireError> {
        loop {
            match self.state {
                State::Prefix => {
                    let Some(prefix) = self.buf.first_chunk::<PREFIX_LEN>() else { return Ok(None) };
                    let len = u32::from_be_bytes(*prefix);
                    if len > self.limits.max_header {
                        return Err(WireError::FrameTooLarge {
                            len: len.into(),
                            max: self.limits.max_header,
                        });
                    }
                    self.buf.advance(PREFIX_LEN);
                    // Lossless on every platform Rust supports with std: usize is at least 32 bits.
                    self.state = State::Header { len: len as usize };
                }
                State::Header { len } => {
                    if self.buf.len() < len {
                        return Ok(None);
                    }
                    let decoded = codec::decode_header(&self.buf[..len], &self.limits)?;
                    self.buf.advance(len);
                    match decoded {
                        Decoded::Message(msg) => {
                            self.state = State::Prefix;
                            return Ok(Some(HeaderStep::Message(msg)));
                        }
                        Decoded::Payload { index, offset, len } => {
                            // `decode_header` checked len ≤ max_payload ≤ u64; refuse what the platform
                            // cannot address rather than truncate.
                            let len = usize::try_from(len).map_err(|_| WireError::PayloadTooLarge {
                                len,
                                max: self.limits.max_payload,
                            })?;
                            self.state = State::Prefix;
                            return Ok(Some(HeaderStep::Payload { index, offset, len }));
                        }
                    }
                }
                State::Payload { .. } | State::Streaming { .. } => return Ok(None),
            }
        }
    }

    /// Bytes received and not yet returned as messages (part of a frame, or whole frames not yet
    /// pulled).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial frame is pending: the stream may end here cleanly.
    pub fn is_idle(&self) -> bool {
        self.state == State::Prefix && self.buf.is_empty()
    }

    /// The error the decoder failed with, if any.
    pub fn error(&self) -> Option<&WireError> {
        self.failed.as_ref()
    }

    /// Call when the stream has ended: an error if it ended inside a frame (or the decoder failed).
    /// Pull all messages first; whole frames still buffered count as a clean end only once pulled.
    pub fn finish(&self) -> Result<(), WireError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.is_idle() => Ok(()),
            None => Err(WireError::UnexpectedEof { buffered: self.buf.len() }),
        }
    }
}
