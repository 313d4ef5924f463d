//! An origin's upstream registry: the OCI Distribution API over plain HTTP/1.1 (hyper), for cold
//! blobs and for tags and manifests (Kraken's origins read blobs from a storage backend, its
//! build-index resolves tags; reference/kraken.md §1.6). Every blob and manifest fetched is
//! checked against its digest before it is used.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_protocols::Digest;
use shoal_protocols::metainfo::{MetaInfo, PieceLengths};

use super::{MANIFEST_ACCEPT, manifest_media_type};
use crate::driver::store::PieceHasher;

/// Largest manifest accepted (the distribution spec suggests registries accept at least 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// Redirects followed per request (registries may redirect blob reads to storage).
const MAX_REDIRECTS: usize = 5;

/// How long one request may wait for its response head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A registry at `http://host:port`.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host:port`, as given.
    authority: String,
}

/// A manifest as the upstream registry served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

impl Upstream {
    /// Parses `http://host:port[/]`. Only plain HTTP is spoken (shoal's tests and benchmarks run
    /// registries on loopback).
    pub fn parse(url: &str) -> Result<Upstream, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("upstream registry {url:?}: give an http:// URL such as http://127.0.0.1:5000 (https is not supported)")
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("upstream registry {url:?}: give only the scheme, host and port, no path"));
        }
        Ok(Upstream { authority: authority.to_owned() })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    async fn addr(authority: &str) -> Result<SocketAddr, String> {
        let with_port =
            if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("resolving {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority} resolves to no address"))
    }

    /// One GET, following redirects; the response is returned whatever its status.
    async fn get(&self, path: &str, accept: Option<&str>) -> Result<Response<Incoming>, String> {
        let (mut authority, mut path) = (self.authority.clone(), path.to_owned());
        for _ in 0..=MAX_REDIRECTS {
            let addr = Self::addr(&authority).await?;
            let url = format!("http://{authority}{path}");
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connecting to {url}: {e}"))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            let mut req = Request::get(&path).header(hyper::header::HOST, &authority);
            if let Some(a) = accept {
                req = req.header(hyper::header::ACCEPT, a);
            }
            let req = req.body(Empty::<Bytes>::new()).map_err(|e| format!("{url}: {e}"))?;
            let resp = tokio::time::timeout(HEAD_TIMEOUT, send.send_request(req))
                .await
                .map_err(|_| format!("{url}: no answer within {HEAD_TIMEOUT:?}"))?
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("{url}: redirect without a Location"))?;
            match location.strip_prefix("http://") {
                Some(rest) => {
                    let (a, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    (authority, path) =
                        (a.to_owned(), if p.is_empty() { "/".to_owned() } else { p.to_owned() });
                }
                None if location.starts_with('/') => path = location.to_owned(),
                None => return Err(format!("{url}: redirect to {location:?}, which is not plain http")),
            }
        }
        Err(format!("http://{}{path}: more than {MAX_REDIRECTS} redirects", self.authority))
    }

    /// `GET /v2/<name>/manifests/<reference>`: `None` if the registry does not know it. A manifest
    /// asked for by digest must hash to it.
    pub async fn manifest(&self, name: &str, reference: &str) -> Result<Option<Manifest>, String> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let resp = self.get(&path, Some(MANIFEST_ACCEPT)).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("{}{path}: {status}", self.authority));
        }
        let media_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned());
        let body = http_body_util::Limited::new(resp.into_body(), MAX_MANIFEST)
            .collect()
            .await
            .map_err(|e| format!("{}{path}: reading the manifest: {e}", self.authority))?
            .to_bytes()
            .to_vec();
        let digest = Digest::of(&body);
        if let Ok(asked) = reference.parse::<Digest>()
            && reference.starts_with("sha256:")
            && asked != digest
        {
            return Err(format!(
                "{}{path}: the manifest served hashes to {digest}, not to {asked}",
                self.authority
            ));
        }
        let media_type = media_type
            .filter(|t| !t.is_empty() && t != "application/json" && t != "application/octet-stream")
            .unwrap_or_else(|| manifest_media_type(&body));
        Ok(Some(Manifest { bytes: body, media_type, digest }))
    }

    /// `GET /v2/<name>/blobs/<digest>` into the file `path`, hashing it on the way: `None` if the
    /// registry does not know the blob. The file is removed unless its SHA-256 is `digest`; the
    /// metainfo is cut at the piece length `piece_lengths` selects for its size.
    pub async fn blob_to_file(
        &self,
        name: &str,
        digest: Digest,
        path: &Path,
        piece_lengths: &PieceLengths,
    ) -> Result<Option<MetaInfo>, String> {
        let url_path = format!("/v2/{name}/blobs/{digest}");
        let resp = self.get(&url_path, None).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(format!("{}{url_path}: {status}", self.authority));
        }
        let size: u64 = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("{}{url_path}: no Content-Length", self.authority))?;
        let written = async {
            let mut file = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?,
            );
            let mut hasher = PieceHasher::new(piece_lengths.select(size));
            let mut body = resp.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("{}{url_path}: {e}", self.authority))?;
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    file.write_all(data).map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
            }
            file.flush().map_err(|e| format!("writing {}: {e}", path.display()))?;
            let m = hasher.finish().map_err(|e| format!("{}{url_path}: {e}", self.authority))?;
            if m.length() != size {
                return Err(format!(
                    "{}{url_path}: {} bytes arrived of the {size} announced",
                    self.authority,
                    m.length()
                ));
            }
            if m.digest() != digest {
                return Err(format!(
                    "{}{url_path}: the bytes served hash to {}, not to {digest}",
                    self.authority,
                    m.digest()
                ));
            }
            Ok(m)
        }
        .await;
        if written.is_err() {
            let _ = std::fs::remove_file(path);
        }
        written.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_without_paths() {
        assert_eq!(Upstream::parse("http://127.0.0.1:5000/").unwrap().authority(), "127.0.0.1:5000");
        assert!(Upstream::parse("https://x").unwrap_err().contains("https is not supported"));
        assert!(Upstream::parse("http://x/v2").unwrap_err().contains("no path"));
        assert!(Upstream::parse("http://").is_err());
    }
}
