//! shoal's benches live in `benches/` (one file per area, run with `cargo bench -p shoal-bench`);
//! this library holds the inputs they share. The regression gate's configuration and baselines are
//! in `bench/gate.toml` and `bench/baselines/`, run by `shoal gate` through [`gate`].

pub mod gate;
pub mod measure;
pub mod scenarios;
pub mod stats;

/// The criterion version the scenario benchmarks are built on, for crates that write their own.
pub use criterion;

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_protocols::{Bitfield, Digest, Handshake, InfoHash, Message, Payload, PeerId};

/// Pieces in a 3 GB blob at 4 MiB pieces, Kraken's benchmark: ~750 (715 for 3 GB, 358 per layer).
pub const PIECES: u32 = 750;

/// A path under the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A half-full bitfield of `len` pieces: every other piece.
pub fn half_bitfield(len: u32) -> Bitfield {
    let mut b = Bitfield::new(len);
    for i in (0..len).step_by(2) {
        b.set(i);
    }
    b
}

/// A handshake as an agent sends it mid-download: its own bitfield of [`PIECES`] pieces and those of
/// the 10 peers it is connected to (Kraken's default connection limit per torrent).
pub fn handshake() -> Message {
    let remote_bitfields =
        (0..10u8).map(|i| (PeerId::from_raw([i; 20]), half_bitfield(PIECES))).collect::<BTreeMap<_, _>>();
    Message::Bitfield(Box::new(Handshake {
        peer_id: PeerId::from_raw([0x11; 20]),
        info_hash: InfoHash::from_raw([0x22; 20]),
        digest: Digest::from_raw([0x33; 32]),
        bitfield: half_bitfield(PIECES),
        remote_bitfields,
        namespace: "library/ubuntu".into(),
    }))
}

/// A whole-piece request, as Kraken sends them.
pub fn request() -> Message {
    Message::PieceRequest { index: 377, offset: 0, length: 4 << 20 }
}

/// A piece payload header; the payload is a simulated (tagged) 4 MiB piece, so the frame is the
/// header alone.
pub fn payload_header() -> Message {
    Message::PiecePayload {
        index: 377,
        offset: 0,
        payload: Payload::Tagged { len: 4 << 20, tag: 0xdead_beef },
    }
}
