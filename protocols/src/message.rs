//! The P2P messages of Kraken's wire protocol (`proto/p2p/p2p.proto`), as typed values.
//!
//! The byte encoding lives in [`crate::wire`]; the discrete-event engine passes these values directly
//! and charges their [`Message::wire_len`] to the network.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::bitfield::Bitfield;
use crate::types::{Digest, InfoHash, PeerId, PieceIndex};

/// The handshake: one BITFIELD message in each direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The sender's peer id.
    pub peer_id: PeerId,
    /// The torrent the connection is for (one connection per torrent).
    pub info_hash: InfoHash,
    /// The blob digest (Kraken's `name`).
    pub digest: Digest,
    /// The pieces the sender has; its length must be the torrent's piece count.
    pub bitfield: Bitfield,
    /// The bitfields of every peer the sender is connected to for this torrent.
    pub remote_bitfields: BTreeMap<PeerId, Bitfield>,
    /// The opener's namespace; the acceptor replies with an empty one.
    pub namespace: String,
}

/// Kraken's only error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// `PIECE_REQUEST_FAILED` (0): the requested piece cannot be served.
    PieceRequestFailed,
}

/// A piece's content: real bytes (real sockets) or, in simulation, a length and the content tag the
/// bytes would have. Both pass the same integrity check, [`Payload::crc32`].
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    /// The piece's real bytes.
    Bytes(Bytes),
    /// A simulated piece: no bytes, only their length and content tag.
    Tagged {
        /// The piece's length in bytes.
        len: u64,
        /// The CRC32 the bytes are deemed to have ([`crate::metainfo::content_tag`]).
        tag: u32,
    },
}

impl Payload {
    /// The piece's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Tagged { len, .. } => *len,
        }
    }

    /// True for a zero-length payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CRC32-IEEE of the content: computed for bytes, declared for tags.
    pub fn crc32(&self) -> u32 {
        match self {
            Payload::Bytes(b) => crc32fast::hash(b),
            Payload::Tagged { tag, .. } => *tag,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({} B)", b.len()),
            Payload::Tagged { len, tag } => write!(f, "Tagged({len} B, {tag:08x})"),
        }
    }
}

/// One P2P message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// BITFIELD: the handshake, once per direction.
    Bitfield(Box<Handshake>),
    /// PIECE_REQUEST: a whole piece (Kraken requires `offset == 0` and `length == piece length`).
    PieceRequest {
        /// The piece.
        index: PieceIndex,
        /// Byte offset in the piece: 0 (any other is refused with ERROR).
        offset: u64,
        /// Bytes asked for: the piece's length (any other is refused with ERROR).
        length: u64,
    },
    /// PIECE_PAYLOAD: the header, followed on the wire by `payload.len()` raw bytes.
    PiecePayload {
        /// The piece.
        index: PieceIndex,
        /// Byte offset in the piece: 0, as only whole pieces are served.
        offset: u64,
        /// The piece's content.
        payload: Payload,
    },
    /// ANNOUCE_PIECE (sic): the sender now has piece `index`.
    AnnouncePiece {
        /// The piece the sender now has.
        index: PieceIndex,
    },
    /// CANCEL_PIECE: defined by the protocol, never sent by Kraken.
    CancelPiece {
        /// The piece whose request is cancelled.
        index: PieceIndex,
    },
    /// ERROR: a request could not be served.
    Error {
        /// The piece that could not be served.
        index: PieceIndex,
        /// Why, as Kraken's code.
        code: ErrorCode,
        /// A human-readable reason.
        message: String,
    },
    /// COMPLETE: the sender has every piece.
    Complete,
    /// CHOKE (shoal extension, BitTorrent policy): the sender will not serve the receiver's requests;
    /// requests not yet answered are dropped.
    Choke,
    /// UNCHOKE (shoal extension, BitTorrent policy): the sender now serves the receiver's requests.
    Unchoke,
    /// INTERESTED (shoal extension, BitTorrent policy): the receiver has a piece the sender lacks.
    Interested,
    /// NOT_INTERESTED (shoal extension, BitTorrent policy): the receiver has nothing the sender lacks.
    NotInterested,
}

impl Message {
    /// A short name for logs and message counters.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Bitfield(_) => MessageKind::Bitfield,
            Message::PieceRequest { .. } => MessageKind::PieceRequest,
            Message::PiecePayload { .. } => MessageKind::PiecePayload,
            Message::AnnouncePiece { .. } => MessageKind::AnnouncePiece,
            Message::CancelPiece { .. } => MessageKind::CancelPiece,
            Message::Error { .. } => MessageKind::Error,
            Message::Complete => MessageKind::Complete,
            Message::Choke => MessageKind::Choke,
            Message::Unchoke => MessageKind::Unchoke,
            Message::Interested => MessageKind::Interested,
            Message::NotInterested => MessageKind::NotInterested,
        }
    }
}

/// The message type, Kraken's `p2p.Message.Type` enum values (0–6), then shoal's extensions for the
/// BitTorrent policy (7–10), which Kraken peers do not know and never receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    /// `BITFIELD`: the handshake.
    Bitfield = 0,
    /// `PIECE_REQUEST`.
    PieceRequest = 1,
    /// `PIECE_PAYLOAD`.
    PiecePayload = 2,
    /// `ANNOUCE_PIECE` (sic).
    AnnouncePiece = 3,
    /// `CANCEL_PIECE`.
    CancelPiece = 4,
    /// `ERROR`.
    Error = 5,
    /// `COMPLETE`.
    Complete = 6,
    /// `CHOKE` (shoal extension).
    Choke = 7,
    /// `UNCHOKE` (shoal extension).
    Unchoke = 8,
    /// `INTERESTED` (shoal extension).
    Interested = 9,
    /// `NOT_INTERESTED` (shoal extension).
    NotInterested = 10,
}

impl MessageKind {
    /// Indexed by the type value.
    pub const ALL: [MessageKind; 11] = [
        MessageKind::Bitfield,
        MessageKind::PieceRequest,
        MessageKind::PiecePayload,
        MessageKind::AnnouncePiece,
        MessageKind::CancelPiece,
        MessageKind::Error,
        MessageKind::Complete,
        MessageKind::Choke,
        MessageKind::Unchoke,
        MessageKind::Interested,
        MessageKind::NotInterested,
    ];

    /// The snake_case name used in message counters and outputs (`piece_payload`, …).
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Bitfield => "bitfield",
            MessageKind::PieceRequest => "piece_request",
            MessageKind::PiecePayload => "piece_payload",
            MessageKind::AnnouncePiece => "announce_piece",
            MessageKind::CancelPiece => "cancel_piece",
            MessageKind::Error => "error",
            MessageKind::Complete => "complete",
            MessageKind::Choke => "choke",
            MessageKind::Unchoke => "unchoke",
            MessageKind::Interested => "interested",
            MessageKind::NotInterested => "not_interested",
        }
    }
}
