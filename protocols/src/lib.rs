//! Kraken's peer-to-peer protocol as deterministic, sans-IO state machines.
//!
//! shoal's engines (discrete-event, turmoil, real sockets) all drive the nodes in this crate; none of
//! them makes a protocol decision. The crate never reads a clock, opens a socket or uses a global
//! random number generator:
//!
//! - inputs are `handle_*(now, …)` methods, where `now` is an [`Instant`] chosen by the driver;
//! - outputs are drained with `poll_*` until they return `None`, after every input;
//! - `poll_timeout()` gives the next deadline, at which the driver calls `handle_timeout(now)`;
//! - every node owns a `rand_chacha` generator seeded by its creator.
//!
//! The nodes: [`agent::Agent`] (leeches and seeds on every host), [`origin::Origin`] (an accept-only
//! seeder on the rendezvous ring) and [`tracker::Tracker`] (peer store and handout). Their shared
//! vocabulary: [`types`], [`bitfield`], [`metainfo`], [`message`] and its byte encoding [`wire`].
//! Every configuration value, with Kraken's default, is in [`config`]. The specification followed is
//! Kraken at commit 2a7fbcb (see `shared/reference/kraken.md`).

#![warn(missing_docs)]

pub mod agent;
pub mod announce;
pub mod bitfield;
pub mod config;
pub mod hrw;
pub mod message;
pub mod metainfo;
pub mod origin;
pub mod peer;
pub mod policy;
pub mod time;
pub mod tracker;
pub mod types;
pub mod wire;

pub use bitfield::Bitfield;
pub use message::{Handshake, Message, MessageKind, Payload};
pub use metainfo::MetaInfo;
pub use time::Instant;
pub use tracker::{Tracker, TrackerOutput};
pub use types::{Digest, InfoHash, PeerId, PeerInfo, PieceIndex};
