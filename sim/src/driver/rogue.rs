//! A misbehaving peer for robustness tests of the socket engines: it announces itself to every
//! tracker as a complete peer (so the completeness handout puts it first) and, once an agent has
//! dialled it and sent its handshake, misbehaves in one of the [`Rogue`] ways. The run must complete
//! from the other peers, and Kraken's blacklist must keep the agent from dialling it again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shoal_protocols::announce::AnnounceRequest;
use shoal_protocols::wire::{self, Decoder, DecoderLimits};
use shoal_protocols::{Bitfield, Handshake, Message, MetaInfo, Payload, PeerId, PeerInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::spawn_local;

use super::peer::HttpClient;
use super::{Ctx, Transport};

/// How the rogue peer misbehaves after the agent's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rogue {
    /// Sends bytes that are not a frame.
    Garbage,
    /// Sends a frame prefix announcing a header far larger than Kraken's 32 KiB limit.
    OversizedFrame,
    /// Answers the handshake properly (every piece), then serves every request with wrong bytes.
    CorruptPieces,
}

/// What the rogue peer saw during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RogueReport {
    /// Connections per agent (by the peer id of its handshake).
    pub dials_by_peer: BTreeMap<PeerId, u32>,
    /// Connections the agent closed (end of stream or reset) after the misbehaviour.
    pub closed_by_agent: u32,
    /// Piece requests answered with wrong bytes.
    pub corrupt_pieces_sent: u32,
}

/// Runs the rogue peer on `listener` (bound at `addr`) until the run ends.
pub(crate) async fn run_rogue<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    kind: Rogue,
    listener: T::Listener,
    addr: SocketAddr,
    report: Rc<RefCell<RogueReport>>,
) {
    let peer_id = PeerId::from_addr(addr);
    let metainfos: Vec<MetaInfo> = ctx.blobs.iter().map(|b| b.metainfo.clone()).collect();
    // Announce every blob as a complete peer, every second.
    let (mi2, http) = (metainfos.clone(), HttpClient::new(t.clone(), ctx.clone(), None));
    let trackers = ctx.addrs.p2p.trackers.clone();
    spawn_local(async move {
        loop {
            for mi in &mi2 {
                let request = AnnounceRequest {
                    digest: mi.digest(),
                    info_hash: mi.info_hash(),
                    peer: PeerInfo { peer_id, addr, origin: false, complete: true },
                    dragonfly: None,
                };
                let body = serde_json::to_vec(&request).unwrap_or_default();
                let path = format!("/announce/{}", mi.info_hash().hex());
                for &tr in &trackers {
                    let _ = http.call(tr, None, "POST", &path, &body).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    loop {
        let Ok((s, _)) = t.accept(&listener).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (report, metainfos) = (report.clone(), metainfos.clone());
        spawn_local(async move {
            let _ = serve(s, kind, peer_id, &metainfos, &report).await;
        });
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    kind: Rogue,
    peer_id: PeerId,
    metainfos: &[MetaInfo],
    report: &RefCell<RogueReport>,
) -> std::io::Result<()> {
    let mut dec = Decoder::new(DecoderLimits { accept_tagged: false, ..DecoderLimits::default() });
    let mut buf = vec![0u8; 64 * 1024];
    // The agent's handshake.
    let hs = loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        dec.feed(&buf[..n]);
        match dec.next_message() {
            Ok(Some(Message::Bitfield(hs))) => break hs,
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) => {}
        }
    };
    *report.borrow_mut().dials_by_peer.entry(hs.peer_id).or_default() += 1;
    match kind {
        Rogue::Garbage => s.write_all(b"\x00\x00\x00\x05\xff\xff\xff\xff\xffnot kraken at all").await?,
        Rogue::OversizedFrame => s.write_all(&(64u32 << 20).to_be_bytes()).await?,
        Rogue::CorruptPieces => {
            let Some(mi) = metainfos.iter().find(|m| m.info_hash() == hs.info_hash) else { return Ok(()) };
            let reply = Message::Bitfield(Box::new(Handshake {
                peer_id,
                info_hash: mi.info_hash(),
                digest: mi.digest(),
                bitfield: Bitfield::full(mi.num_pieces()),
                remote_bitfields: BTreeMap::new(),
                namespace: String::new(),
            }));
            let mut out = Vec::new();
            let _ = wire::encode(&reply, &mut out);
            s.write_all(&out).await?;
            loop {
                let msg = match dec.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let n = s.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        dec.feed(&buf[..n]);
                        continue;
                    }
                    Err(_) => break,
                };
                if let Message::PieceRequest { index, length, .. } = msg {
                    let len = usize::try_from(length).unwrap_or(0).min(64 << 20);
                    let bad = Message::PiecePayload {
                        index,
                        offset: 0,
                        payload: Payload::Bytes(bytes::Bytes::from(vec![0xa5; len])),
                    };
                    out.clear();
                    let _ = wire::encode(&bad, &mut out);
                    s.write_all(&out).await?;
                    report.borrow_mut().corrupt_pieces_sent += 1;
                }
            }
            report.borrow_mut().closed_by_agent += 1;
            return Ok(());
        }
    }
    // The agent must hang up: wait for the end of the stream (bounded).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    if ended.is_ok() {
        report.borrow_mut().closed_by_agent += 1;
    }
    Ok(())
}
