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
    pub peer_id: PeerId,
    pub info_hash: InfoHash,
    /// The blob digest (Kraken's `name`).
    pub digest: Digest,
    pub bitfield: Bitfield,
    /// The bitfields of every peer the sender is connected to for this torrent.
    pub remote_bitfields: BTreeMap<PeerId, Bitfield>,
    /// The opener's namespace; the acceptor replies with an empty one.
    pub namespace: String,
}

/// Kraken's only error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    PieceRequestFailed,
}

/// A piece's content: real bytes (real sockets) or, in simulation, a length and the content tag the
/// bytes would have. Both pass the same integrity check, [`Payload::crc32`].
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    Bytes(Bytes),
    Tagged { len: u64, tag: u32 },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Tagged { len, .. } => *len,
        }
    }

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
    PieceRequest { index: PieceIndex, offset: u64, length: u64 },
    /// PIECE_PAYLOAD: the header, followed on the wire by `payload.len()` raw bytes.
    PiecePayload { index: PieceIndex, offset: u64, payload: Payload },
    /// ANNOUCE_PIECE (sic): the sender now has piece `index`.
    AnnouncePiece { index: PieceIndex },
    /// CANCEL_PIECE: defined by the protocol, never sent by Kraken.
    CancelPiece { index: PieceIndex },
    /// ERROR: a request could not be served.
    Error { index: PieceIndex, code: ErrorCode, message: String },
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
    Bitfield = 0,
    PieceRequest = 1,
    PiecePayload = 2,
    AnnouncePiece = 3,
    CancelPiece = 4,
    Error = 5,
    Complete = 6,
    Choke = 7,
    Unchoke = 8,
    Interested = 9,
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
