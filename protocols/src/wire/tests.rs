//! Tests of the wire encoding: pinned bytes against `p2p.proto`, malformed input, and properties
//! (round trips, sizes, split-invariance, no panics on arbitrary bytes).

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::bitfield::Bitfield;
use crate::message::{ErrorCode, Handshake};
use crate::types::{Digest, InfoHash, PeerId};

/// Prefixes a protobuf part with its big-endian length.
fn frame(proto: &[u8]) -> Vec<u8> {
    let mut out = (proto.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(proto);
    out
}

/// Decodes one message from a complete input.
fn decode_one(bytes: &[u8]) -> Result<Option<Message>, WireError> {
    decode_one_with(bytes, DecoderLimits::default())
}

fn decode_one_with(bytes: &[u8], limits: DecoderLimits) -> Result<Option<Message>, WireError> {
    let mut d = Decoder::new(limits);
    d.feed(bytes);
    d.next_message()
}

fn handshake() -> Handshake {
    let mut bitfield = Bitfield::new(1);
    bitfield.set(0);
    Handshake {
        peer_id: PeerId::from_raw([0x11; 20]),
        info_hash: InfoHash::from_raw([0x22; 20]),
        digest: Digest::from_raw([0x33; 32]),
        bitfield,
        remote_bitfields: BTreeMap::from([(PeerId::from_raw([0x44; 20]), Bitfield::new(0))]),
        namespace: "ns".into(),
    }
}

/// A length-delimited field with a one-byte tag and a one-byte length.
fn len_field(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 128, "helper only writes one-byte lengths");
    let mut out = vec![tag, content.len() as u8];
    out.extend_from_slice(content);
    out
}

#[test]
fn piece_request_bytes_are_pinned() {
    let msg = Message::PieceRequest { index: 5, offset: 0, length: 4 << 20 };
    let bytes = encode_to_vec(&msg).unwrap();
    #[rustfmt::skip]
    let expected = [
        0, 0, 0, 11,            // length prefix
        0x10, 0x01,             // type (2, varint) = PIECE_REQUEST
        0x22, 0x07,             // pieceRequest (4, bytes), 7 bytes
        0x10, 0x05,             //   index (2) = 5
                                //   offset (3) = 0: omitted
        0x20, 0x80, 0x80, 0x80, 0x02, // length (4) = 4 MiB
    ];
    assert_eq!(bytes, expected);
    assert_eq!(msg.wire_len(), bytes.len() as u64);
    assert_eq!(decode_one(&bytes), Ok(Some(msg)));
}

#[test]
fn small_messages_are_pinned() {
    // Kraken's NewCompleteMessage sets no sub-message: only the type.
    assert_eq!(encode_to_vec(&Message::Complete).unwrap(), [0, 0, 0, 2, 0x10, 0x06]);
    // A set sub-message is written even when all its fields are default.
    assert_eq!(
        encode_to_vec(&Message::AnnouncePiece { index: 0 }).unwrap(),
        [0, 0, 0, 4, 0x10, 0x03, 0x32, 0]
    );
    assert_eq!(
        encode_to_vec(&Message::CancelPiece { index: 300 }).unwrap(),
        [0, 0, 0, 7, 0x10, 0x04, 0x3a, 0x03, 0x10, 0xac, 0x02]
    );
    let err = Message::Error { index: 3, code: ErrorCode::PieceRequestFailed, message: "x".into() };
    // error (8): error string (2) "x", index (3) 3; code PIECE_REQUEST_FAILED = 0 omitted.
    assert_eq!(
        encode_to_vec(&err).unwrap(),
        [0, 0, 0, 9, 0x10, 0x05, 0x42, 0x05, 0x12, 0x01, b'x', 0x18, 0x03]
    );
    let payload =
        Message::PiecePayload { index: 1, offset: 0, payload: Payload::Bytes(Bytes::from_static(b"abc")) };
    assert_eq!(
        encode_to_vec(&payload).unwrap(),
        [0, 0, 0, 8, 0x10, 0x02, 0x2a, 0x04, 0x10, 0x01, 0x20, 0x03, b'a', b'b', b'c']
    );
    for msg in [Message::Complete, Message::AnnouncePiece { index: 0 }, err, payload] {
        let bytes = encode_to_vec(&msg).unwrap();
        assert_eq!(msg.wire_len(), bytes.len() as u64);
        assert_eq!(decode_one(&bytes), Ok(Some(msg)));
    }
}

#[test]
fn handshake_bytes_are_pinned() {
    let msg = Message::Bitfield(Box::new(handshake()));
    let mut body = Vec::new();
    body.extend(len_field(0x12, "22".repeat(20).as_bytes())); // infoHash (2)
    body.extend([0x1a, 64]); // name (3): the digest's bare hex
    body.extend("33".repeat(32).as_bytes());
    body.extend(len_field(0x22, "11".repeat(20).as_bytes())); // peerID (4)
    body.extend(len_field(0x2a, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])); // bitfieldBytes (5)
    body.extend(len_field(0x32, b"ns")); // namespace (6)
    let mut entry = len_field(0x0a, "44".repeat(20).as_bytes()); // key (1)
    entry.extend(len_field(0x12, &[0; 8])); // value (2): an empty bitfield
    body.extend(len_field(0x3a, &entry)); // remoteBitfieldBytes (7)
    assert_eq!(body.len(), 226);
    // No type field: BITFIELD is the enum's default 0. bitfield (3), length 226 = varint e2 01.
    let mut proto = vec![0x1a, 0xe2, 0x01];
    proto.extend(body);
    let bytes = encode_to_vec(&msg).unwrap();
    assert_eq!(bytes, frame(&proto));
    assert_eq!(msg.wire_len(), bytes.len() as u64);
    assert_eq!(decode_one(&bytes), Ok(Some(msg)));
}

#[test]
fn tagged_payload_carries_a_marker_and_no_trailer() {
    let msg = Message::PiecePayload {
        index: 1,
        offset: 0,
        payload: Payload::Tagged { len: 100, tag: 0xdead_beef },
    };
    let bytes = encode_to_vec(&msg).unwrap();
    let mut proto = vec![0x10, 0x02, 0x2a, 24, 0x10, 0x01, 0x20, 100];
    proto.extend(len_field(0x2a, b"shoal-tag:deadbeef"));
    assert_eq!(bytes, frame(&proto));
    assert_eq!(encoded_len(&msg), bytes.len() as u64);
    // Bandwidth accounting: the same as the real-bytes message, without the marker.
    let real = Message::PiecePayload { index: 1, offset: 0, payload: Payload::Bytes(vec![7; 100].into()) };
    assert_eq!(msg.wire_len(), real.wire_len());
    assert_eq!(msg.wire_len(), bytes.len() as u64 - 20 + 100);
    assert_eq!(decode_one(&bytes), Ok(Some(msg)));
    let refuse = DecoderLimits { accept_tagged: false, ..DecoderLimits::default() };
    assert_eq!(decode_one_with(&bytes, refuse), Err(WireError::TaggedRefused));
}

#[test]
fn digest_markers_are_checked_and_other_digests_ignored() {
    let payload = |digest: &[u8]| {
        let mut body = vec![0x10, 0x01, 0x20, 0x02];
        body.extend(len_field(0x2a, digest));
        let mut proto = vec![0x10, 0x02];
        proto.extend(len_field(0x2a, &body));
        frame(&proto)
    };
    assert_eq!(decode_one(&payload(b"shoal-tag:xyz")), Err(WireError::BadTagMarker));
    assert_eq!(decode_one(&payload(b"shoal-tag:0123456789")), Err(WireError::BadTagMarker));
    let mut real = payload(b"sha1:abc");
    real.extend([9, 8]);
    let expected =
        Message::PiecePayload { index: 1, offset: 0, payload: Payload::Bytes(Bytes::from_static(&[9, 8])) };
    assert_eq!(decode_one(&real), Ok(Some(expected)));
}

#[test]
fn frame_limit_is_kraken_32_kib_both_ways() {
    // An ERROR with an n-byte string: proto = 2 (type) + 1 + 3 (field 8, length) + 1 + 3 + n.
    let err =
        |n: usize| Message::Error { index: 0, code: ErrorCode::PieceRequestFailed, message: "e".repeat(n) };
    let max = encode_to_vec(&err(32_758)).unwrap();
    assert_eq!(max.len(), 4 + 32_768);
    assert_eq!(decode_one(&max), Ok(Some(err(32_758))));
    let mut out = vec![1, 2, 3];
    assert_eq!(
        encode(&err(32_759), &mut out),
        Err(WireError::FrameTooLarge { len: 32_769, max: MAX_MESSAGE_SIZE })
    );
    assert_eq!(out, [1, 2, 3], "a refused message writes nothing");
    // The reader refuses on the prefix alone, before buffering the frame.
    assert_eq!(
        decode_one(&32_769u32.to_be_bytes()),
        Err(WireError::FrameTooLarge { len: 32_769, max: 32_768 })
    );
    // A handshake with a 300,000-piece bitfield (37.5 KB) cannot be sent to Kraken.
    let mut h = handshake();
    h.bitfield = Bitfield::new(300_000);
    assert!(matches!(encode_to_vec(&Message::Bitfield(Box::new(h))), Err(WireError::FrameTooLarge { .. })));
}

#[test]
fn values_beyond_int32_are_refused() {
    for msg in [
        Message::PieceRequest { index: u32::MAX, offset: 0, length: 1 },
        Message::PieceRequest { index: 0, offset: 1 << 31, length: 1 },
        Message::AnnouncePiece { index: 1 << 31 },
        Message::PiecePayload { index: 0, offset: 0, payload: Payload::Tagged { len: 1 << 31, tag: 0 } },
    ] {
        let mut out = Vec::new();
        assert!(matches!(encode(&msg, &mut out), Err(WireError::ValueOutOfRange { .. })), "{msg:?}");
        assert!(out.is_empty());
    }
}

#[test]
fn oversized_payload_is_refused_before_buffering() {
    let body = [0x10, 0x01, 0x20, 0xff, 0xff, 0xff, 0xff, 0x07]; // length = i32::MAX
    let mut proto = vec![0x10, 0x02];
    proto.extend(len_field(0x2a, &body));
    let mut d = Decoder::default();
    d.feed(&frame(&proto));
    assert_eq!(
        d.next_message(),
        Err(WireError::PayloadTooLarge { len: i32::MAX as u64, max: DEFAULT_MAX_PAYLOAD })
    );
    assert_eq!(d.buffered_len(), 0);
}

#[test]
fn unknown_fields_and_wire_types_are_skipped() {
    #[rustfmt::skip]
    let junk = [
        0x78, 0x05,                         // field 15, varint
        0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, // field 100, fixed64
        0xa2, 0x01, 0x02, 0xaa, 0xbb,       // field 20, bytes
        0xf3, 0x01, 0x08, 0x01, 0xf4, 0x01, // field 30, group holding field 1 = 1
        0x7d, 1, 2, 3, 4,                   // field 15, fixed32
    ];
    // index (2) as a fixed32 instead of a varint: Go treats it as unknown, so index stays 0.
    let mut body = vec![0x15, 9, 9, 9, 9, 0x18, 0x04];
    body.extend(junk);
    let mut proto = vec![0x10, 0x01];
    proto.extend(junk);
    proto.extend(len_field(0x22, &body));
    proto.extend(len_field(0x0a, b"v1")); // version (1): accepted and ignored
    assert_eq!(
        decode_one(&frame(&proto)),
        Ok(Some(Message::PieceRequest { index: 0, offset: 4, length: 0 }))
    );
}

#[test]
fn repeated_sub_messages_merge() {
    let mut proto = vec![0x10, 0x01];
    proto.extend(len_field(0x22, &[0x10, 0x05, 0x20, 0x01]));
    proto.extend(len_field(0x22, &[0x20, 0x09]));
    assert_eq!(
        decode_one(&frame(&proto)),
        Ok(Some(Message::PieceRequest { index: 5, offset: 0, length: 9 }))
    );
}

#[test]
fn complete_accepts_an_empty_sub_message() {
    assert_eq!(decode_one(&frame(&[0x10, 0x06, 0x4a, 0x00])), Ok(Some(Message::Complete)));
}

#[test]
fn malformed_protobuf_is_an_error() {
    let cases: [(&[u8], WireError); 10] = [
        (&[0x10, 0x80], WireError::TruncatedVarint),
        (&[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], WireError::VarintOverflow),
        (&[0x00, 0x01], WireError::InvalidFieldNumber(0)),
        (&[0x7e, 0x01], WireError::UnknownWireType { field: 15, wire_type: 6 }),
        (&[0x22, 0x05, 0x10], WireError::TruncatedField { field: 4, len: 5, available: 1 }),
        (&[0xf3, 0x01, 0x08, 0x01], WireError::UnterminatedGroup(30)),
        (&[0xf4, 0x01], WireError::UnexpectedEndGroup(30)),
        (&[0x10, 0x0b], WireError::UnknownMessageType(11)),
        (&[0x10, 0x01], WireError::MissingSubMessage(MessageKind::PieceRequest)),
        (&[], WireError::MissingSubMessage(MessageKind::Bitfield)),
    ];
    for (proto, expected) in cases {
        assert_eq!(decode_one(&frame(proto)), Err(expected), "{proto:02x?}");
    }
    // Announce of piece -1: a 10-byte varint, which Go reads as int32 -1.
    let mut proto = vec![0x10, 0x03];
    proto.extend(len_field(0x32, &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
    assert_eq!(decode_one(&frame(&proto)), Err(WireError::NegativeValue { field: "index", value: -1 }));
    let mut proto = vec![0x10, 0x05];
    proto.extend(len_field(0x42, &[0x20, 0x01]));
    assert_eq!(decode_one(&frame(&proto)), Err(WireError::UnknownErrorCode(1)));
    let mut proto = vec![0x10, 0x05];
    proto.extend(len_field(0x42, &[0x12, 0x01, 0xff]));
    assert_eq!(decode_one(&frame(&proto)), Err(WireError::InvalidUtf8 { field: "error" }));
    // Deep groups: bounded, not a stack overflow.
    let mut deep = [0x0bu8].repeat(10_000);
    deep.extend([0x0c].repeat(10_000));
    assert_eq!(decode_one(&frame(&deep)), Err(WireError::NestingTooDeep));
}

#[test]
fn bad_handshake_fields_are_errors() {
    let good = encode_to_vec(&Message::Bitfield(Box::new(handshake()))).unwrap();
    let hex_at = |needle: &str| good.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap();
    let mut bad_peer = good.clone();
    bad_peer[hex_at(&"11".repeat(20))] = b'z';
    assert_eq!(decode_one(&bad_peer), Err(WireError::InvalidHexId { field: "peerID" }));
    let mut bad_key = good.clone();
    bad_key[hex_at(&"44".repeat(20))] = b'z';
    assert_eq!(decode_one(&bad_key), Err(WireError::InvalidHexId { field: "remoteBitfieldBytes key" }));
    let mut bad_bits = good.clone();
    // The own bitfield's last word carries bit 0: set bit 1 too, past its length of 1.
    let at = hex_at("ns") - 3;
    bad_bits[at] = 3;
    assert_eq!(
        decode_one(&bad_bits),
        Err(WireError::BadBitfield { field: "bitfieldBytes", source: BitfieldError::BitPastEnd })
    );
    let small = DecoderLimits { max_pieces: 0, ..DecoderLimits::default() };
    assert!(matches!(
        decode_one_with(&good, small),
        Err(WireError::BadBitfield { field: "bitfieldBytes", .. })
    ));
}

#[test]
fn failure_is_sticky_and_frees_the_buffer() {
    let mut d = Decoder::default();
    d.feed(&frame(&[0x10, 0x0b]));
    d.feed(&encode_to_vec(&Message::Complete).unwrap());
    assert_eq!(d.next_message(), Err(WireError::UnknownMessageType(11)));
    d.feed(&encode_to_vec(&Message::Complete).unwrap());
    assert_eq!(d.next_message(), Err(WireError::UnknownMessageType(11)));
    assert_eq!(d.buffered_len(), 0);
    assert_eq!(d.finish(), Err(WireError::UnknownMessageType(11)));
}

#[test]
fn partial_frames_are_visible() {
    let bytes = encode_to_vec(&Message::AnnouncePiece { index: 7 }).unwrap();
    let mut d = Decoder::default();
    d.feed(&bytes[..3]);
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.buffered_len(), 3);
    assert!(!d.is_idle());
    assert_eq!(d.finish(), Err(WireError::UnexpectedEof { buffered: 3 }));
    d.feed(&bytes[3..]);
    assert_eq!(d.next_message(), Ok(Some(Message::AnnouncePiece { index: 7 })));
    assert!(d.is_idle());
    assert_eq!(d.finish(), Ok(()));
}

// ---- properties ----

fn bitfield_strategy() -> impl Strategy<Value = Bitfield> {
    (0u32..300).prop_flat_map(|len| {
        proptest::collection::vec(0..len.max(1), 0..40).prop_map(move |set| {
            let mut b = Bitfield::new(len);
            for i in set {
                b.set(i);
            }
            b
        })
    })
}

fn handshake_strategy() -> impl Strategy<Value = Handshake> {
    (
        any::<[u8; 20]>(),
        any::<[u8; 20]>(),
        any::<[u8; 32]>(),
        bitfield_strategy(),
        proptest::collection::btree_map(
            any::<[u8; 20]>().prop_map(PeerId::from_raw),
            bitfield_strategy(),
            0..5,
        ),
        "\\PC{0,16}",
    )
        .prop_map(|(peer, info, digest, bitfield, remote_bitfields, namespace)| Handshake {
            peer_id: PeerId::from_raw(peer),
            info_hash: InfoHash::from_raw(info),
            digest: Digest::from_raw(digest),
            bitfield,
            remote_bitfields,
            namespace,
        })
}

fn message_strategy() -> impl Strategy<Value = Message> {
    let index = 0..=i32::MAX as u32;
    let int = 0..=i32::MAX as u64;
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|v| Payload::Bytes(v.into())),
        (0..=DEFAULT_MAX_PAYLOAD, any::<u32>()).prop_map(|(len, tag)| Payload::Tagged { len, tag }),
    ];
    prop_oneof![
        handshake_strategy().prop_map(|h| Message::Bitfield(Box::new(h))),
        (index.clone(), int.clone(), int.clone()).prop_map(|(index, offset, length)| Message::PieceRequest {
            index,
            offset,
            length
        }),
        (index.clone(), int, payload).prop_map(|(index, offset, payload)| Message::PiecePayload {
            index,
            offset,
            payload
        }),
        index.clone().prop_map(|index| Message::AnnouncePiece { index }),
        index.clone().prop_map(|index| Message::CancelPiece { index }),
        (index, "\\PC{0,40}").prop_map(|(index, message)| Message::Error {
            index,
            code: ErrorCode::PieceRequestFailed,
            message
        }),
        Just(Message::Complete),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
    ]
}

/// Feeds `chunks` in order, pulling after each; stops at the first error.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Result<Message, WireError>> {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Splits `bytes` at the given points (taken modulo its length, in any order).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        chunks.push(&bytes[start..c]);
        start = c;
    }
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_message_round_trips(msg in message_strategy()) {
        let bytes = encode_to_vec(&msg).unwrap();
        prop_assert_eq!(encoded_len(&msg), bytes.len() as u64);
        match &msg {
            Message::PiecePayload { payload: Payload::Tagged { len, .. }, .. } => {
                // The marker field is 20 bytes; Kraken would send `len` trailer bytes instead.
                prop_assert_eq!(msg.wire_len(), bytes.len() as u64 - 20 + len);
            }
            _ => prop_assert_eq!(msg.wire_len(), bytes.len() as u64),
        }
        let mut d = Decoder::default();
        d.feed(&bytes);
        prop_assert_eq!(d.next_message(), Ok(Some(msg)));
        prop_assert_eq!(d.next_message(), Ok(None));
        prop_assert!(d.is_idle());
    }

    #[test]
    fn splitting_never_changes_the_result(
        msgs in proptest::collection::vec(message_strategy(), 1..6),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode(m, &mut stream).unwrap();
        }
        let clean = decode_chunks([stream.as_slice()]);
        prop_assert_eq!(&clean, &msgs.iter().cloned().map(Ok).collect::<Vec<_>>());
        stream.extend(&tail);
        let whole = decode_chunks([stream.as_slice()]);
        prop_assert_eq!(&whole[..msgs.len()], &clean[..]);
        prop_assert_eq!(decode_chunks(split(&stream, &cuts)), whole.clone());
        let bytewise = decode_chunks(stream.chunks(1));
        prop_assert_eq!(bytewise, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = decode_chunks([bytes.as_slice()]);
        prop_assert_eq!(decode_chunks(split(&bytes, &cuts)), whole);
    }

    #[test]
    fn corrupted_streams_never_panic(
        msgs in proptest::collection::vec(message_strategy(), 1..4),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode(m, &mut stream).unwrap();
        }
        for (at, byte) in flips {
            let len = stream.len();
            stream[at % len] = byte;
        }
        let whole = decode_chunks([stream.as_slice()]);
        prop_assert_eq!(decode_chunks(split(&stream, &cuts)), whole);
    }
}

#[test]
fn bittorrent_extensions_are_a_type_only() {
    // shoal's CHOKE, UNCHOKE, INTERESTED and NOT_INTERESTED: types 7 to 10, no sub-message.
    let cases = [
        (Message::Choke, 0x07u8, MessageKind::Choke),
        (Message::Unchoke, 0x08, MessageKind::Unchoke),
        (Message::Interested, 0x09, MessageKind::Interested),
        (Message::NotInterested, 0x0a, MessageKind::NotInterested),
    ];
    for (msg, ty, kind) in cases {
        assert_eq!(msg.kind(), kind);
        assert_eq!(MessageKind::ALL[ty as usize], kind);
        let bytes = encode_to_vec(&msg).unwrap();
        assert_eq!(bytes, [0, 0, 0, 2, 0x10, ty], "{msg:?}");
        assert_eq!(crate::wire::encoded_len(&msg), bytes.len() as u64);
        assert_eq!(msg.wire_len(), bytes.len() as u64);
        assert_eq!(decode_one(&bytes), Ok(Some(msg.clone())));
        // Unknown fields in the frame are skipped, as for every proto3 message.
        assert_eq!(decode_one(&frame(&[0x10, ty, 0x18, 0x01])), Ok(Some(msg)));
    }
    let names: Vec<&str> = MessageKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names[7..], ["choke", "unchoke", "interested", "not_interested"]);
}

#[test]
fn a_real_header_of_a_tagged_payload_frames_its_bytes_as_kraken_does() {
    let bytes = Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>());
    let real = Message::PiecePayload { index: 7, offset: 0, payload: Payload::Bytes(bytes.clone()) };
    let tagged = Message::PiecePayload {
        index: 7,
        offset: 0,
        payload: Payload::Tagged { len: bytes.len() as u64, tag: crc32fast::hash(&bytes) },
    };
    let mut expected = Vec::new();
    encode(&real, &mut expected).unwrap();
    let mut got = Vec::new();
    encode_real_header(&tagged, &mut got).unwrap();
    // No shoal marker: the header is the real payload's, and the bytes follow it.
    assert!(!got.windows(TAG_MARKER_PREFIX.len()).any(|w| w == TAG_MARKER_PREFIX.as_bytes()));
    got.extend_from_slice(&bytes);
    assert_eq!(got, expected);
    // Other messages are framed as encode_header frames them.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let request = Message::PieceRequest { index: 3, offset: 0, length: 4 << 20 };
    encode_header(&request, &mut a).unwrap();
    encode_real_header(&request, &mut b).unwrap();
    assert_eq!(a, b);
}

/// Reassembles what `next_chunk` yields into messages.
fn drain_chunks(d: &mut Decoder, out: &mut Vec<Message>, open: &mut Option<(u32, u64, u64, Vec<u8>)>) {
    while let Some(c) = d.next_chunk().expect("valid input") {
        match c {
            Chunk::Message(m) => out.push(m),
            Chunk::PayloadStart { index, offset, len } => *open = Some((index, offset, len, Vec::new())),
            Chunk::PayloadData(b) => {
                assert!(!b.is_empty());
                open.as_mut().expect("inside a payload").3.extend_from_slice(&b);
            }
            Chunk::PayloadEnd => {
                let (index, offset, len, bytes) = open.take().expect("inside a payload");
                assert_eq!(bytes.len() as u64, len);
                out.push(Message::PiecePayload { index, offset, payload: Payload::Bytes(bytes.into()) });
            }
        }
    }
}

proptest! {
    /// Chunked decoding gives the messages whole decoding gives, however the input is split, and
    /// holds no more than one feed's bytes of a payload.
    #[test]
    fn chunks_reassemble_to_the_messages(split in proptest::collection::vec(1usize..9000, 1..40)) {
        let piece = Bytes::from((0..20_000u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
        let msgs = vec![
            Message::Bitfield(Box::new(handshake())),
            Message::PieceRequest { index: 1, offset: 0, length: 20_000 },
            Message::PiecePayload { index: 1, offset: 0, payload: Payload::Bytes(piece.clone()) },
            Message::AnnouncePiece { index: 1 },
            Message::PiecePayload { index: 2, offset: 0, payload: Payload::Bytes(piece.slice(..3)) },
            Message::Complete,
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            encode(m, &mut wire).unwrap();
        }
        let mut d = Decoder::new(DecoderLimits::default());
        let (mut out, mut open) = (Vec::new(), None);
        let mut rest = &wire[..];
        for n in split.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*n).min(rest.len());
            d.feed(&rest[..n]);
            rest = &rest[n..];
            drain_chunks(&mut d, &mut out, &mut open);
            prop_assert!(d.buffered_len() <= 9000);
        }
        prop_assert!(d.is_idle());
        prop_assert_eq!(out, msgs);
    }
}
