//! The read side of the OCI Distribution API (distribution-spec v1.1, "pull"), as Kraken's agents
//! serve it to the container runtime on their host (reference/kraken.md §1.1, §1.6): what a path
//! names, what a reference may be, the error bodies, byte ranges, and manifest media types.
//!
//! The servers and clients that use this are in [`crate::driver::registry`] (an agent's registry
//! port, an origin's upstream registry); [`layout`] writes OCI image layouts for tests and
//! benchmarks.

pub mod layout;
pub mod upstream;

use shoal_protocols::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type shoal serves, as an `Accept` header asks for them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// What a `/v2/…` path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest { name: String, reference: Reference },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: String, digest: Digest },
    /// `/v2/<name>/tags/list`.
    Tags { name: String },
}

/// A manifest reference: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

/// Why a request is refused, with the OCI error code it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// One of the distribution-spec error codes (`BLOB_UNKNOWN`, `NAME_INVALID`, …).
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// The error as the OCI JSON body: `{"errors":[{"code":…,"message":…}]}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "errors": [{ "code": self.code, "message": self.message }] }).to_string()
    }
}

/// Parses a request path under `/v2/`. The repository name may hold slashes, so the path is split
/// at its last `/manifests/`, `/blobs/` or `/tags/list`.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::new(404, "NAME_UNKNOWN", format!("no such endpoint: {path}"));
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags { name: valid_name(name)? });
    }
    if let Some(i) = rest.rfind("/manifests/") {
        let (name, reference) = (&rest[..i], &rest[i + "/manifests/".len()..]);
        return Ok(Route::Manifest { name: valid_name(name)?, reference: parse_reference(reference)? });
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let (name, digest) = (&rest[..i], &rest[i + "/blobs/".len()..]);
        return Ok(Route::Blob { name: valid_name(name)?, digest: parse_digest(digest)? });
    }
    Err(not_found())
}

/// A repository name as the distribution spec allows it: path components of lower-case letters and
/// digits, separated inside a component by `.`, `_`, `__` or runs of `-`.
pub fn valid_name(name: &str) -> Result<String, ApiError> {
    let bad = || ApiError::new(400, "NAME_INVALID", format!("invalid repository name {name:?}"));
    if name.is_empty() || name.len() > 255 {
        return Err(bad());
    }
    for component in name.split('/') {
        let b = component.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(bad());
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator: ".", "_", "__" or one or more "-", followed by an alphanumeric.
            let start = i;
            match b[i] {
                b'.' => i += 1,
                b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return Err(bad()),
            }
            if i == start || !b.get(i).copied().is_some_and(alnum) {
                return Err(bad());
            }
        }
    }
    Ok(name.to_owned())
}

fn parse_reference(r: &str) -> Result<Reference, ApiError> {
    if r.contains(':') {
        return parse_digest(r).map(Reference::Digest);
    }
    let b = r.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(Reference::Tag(r.to_owned()))
    } else {
        Err(ApiError::new(400, "MANIFEST_INVALID", format!("invalid tag {r:?}")))
    }
}

/// A `sha256:<64 hex>` digest (the only algorithm shoal's blobs use).
pub fn parse_digest(d: &str) -> Result<Digest, ApiError> {
    let invalid = |why: &str| ApiError::new(400, "DIGEST_INVALID", format!("invalid digest {d:?}: {why}"));
    let hex = d.strip_prefix("sha256:").ok_or_else(|| invalid("only sha256 digests are served"))?;
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(invalid("expected 64 lower-case hex digits"));
    }
    Digest::from_hex(hex).map_err(|_| invalid("not hex"))
}

/// A satisfiable byte range of a `size`-byte blob: `[start, end]`, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why a `Range` header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// Not a byte range at all (`bytes=x-`, `bytes=5-2`): answered 400.
    Malformed,
    /// A well-formed range that starts past the blob's end: answered 416.
    Unsatisfiable,
}

/// Parses a `Range` header (RFC 9110 §14.2) for a blob of `size` bytes: `None` for no header or
/// one shoal ignores (another unit, several ranges — the whole blob is served).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, RangeError> {
    use RangeError::*;
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Malformed)?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // A suffix: the last n bytes.
        let n: u64 = b.parse().map_err(|_| Malformed)?;
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        ByteRange { start: size.saturating_sub(n), end: size - 1 }
    } else {
        let start: u64 = a.parse().map_err(|_| Malformed)?;
        let end = if b.is_empty() { u64::MAX } else { b.parse::<u64>().map_err(|_| Malformed)? };
        if end < start {
            return Err(Malformed);
        }
        if start >= size {
            return Err(Unsatisfiable);
        }
        ByteRange { start, end: end.min(size - 1) }
    };
    Ok(Some(range))
}

/// The media type of a manifest's bytes: its `mediaType` field, else an OCI index if it lists
/// `manifests`, else an OCI manifest.
pub fn manifest_media_type(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return t.to_owned();
    }
    if v.get("manifests").is_some() { OCI_INDEX } else { OCI_MANIFEST }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes_split_at_the_last_keyword() {
        assert_eq!(route("/v2/").unwrap(), Route::Base);
        assert_eq!(
            route("/v2/demo/img/manifests/v1").unwrap(),
            Route::Manifest { name: "demo/img".into(), reference: Reference::Tag("v1".into()) }
        );
        // A name may itself hold `blobs` as a component.
        assert!(matches!(
            route(&format!("/v2/a/blobs/x/blobs/{D}")).unwrap(),
            Route::Blob { name, .. } if name == "a/blobs/x"
        ));
        let Route::Blob { name, digest } = route(&format!("/v2/library/ubuntu/blobs/{D}")).unwrap() else {
            panic!()
        };
        assert_eq!((name.as_str(), digest.to_string().as_str()), ("library/ubuntu", D));
        assert_eq!(route("/v2/x/tags/list").unwrap(), Route::Tags { name: "x".into() });
        assert_eq!(route("/v3/x").unwrap_err().status, 404);
        assert_eq!(route("/v2/x/other").unwrap_err().status, 404);
    }

    #[test]
    fn names_tags_and_digests_are_checked() {
        for ok in ["a", "a/b", "a.b/c_d", "a__b", "a---b/0"] {
            assert!(valid_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a b"] {
            assert_eq!(valid_name(bad).unwrap_err().code, "NAME_INVALID", "{bad:?}");
        }
        assert!(matches!(route("/v2/a/manifests/_x.1-2"), Ok(Route::Manifest { .. })));
        assert_eq!(route("/v2/a/manifests/.x").unwrap_err().code, "MANIFEST_INVALID");
        assert_eq!(route("/v2/a/blobs/sha512:00").unwrap_err().code, "DIGEST_INVALID");
        assert_eq!(route("/v2/a/blobs/sha256:AB").unwrap_err().code, "DIGEST_INVALID");
        assert_eq!(
            route(&format!("/v2/a/manifests/{}", &D.to_uppercase())).unwrap_err().code,
            "DIGEST_INVALID"
        );
    }

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(r("bytes=0-9"), Ok(Some(ByteRange { start: 0, end: 9 })));
        assert_eq!(r("bytes=90-"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(r("bytes=90-200"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(r("bytes=-10"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(r("bytes=-1000"), Ok(Some(ByteRange { start: 0, end: 99 })));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
        assert_eq!(r("bytes=100-"), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=-0"), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=5-4"), Err(RangeError::Malformed));
        assert_eq!(r("bytes=x-1"), Err(RangeError::Malformed));
        assert_eq!(r("bytes=3"), Err(RangeError::Malformed));
        assert_eq!(ByteRange { start: 90, end: 99 }.len(), 10);
    }

    #[test]
    fn media_types_and_error_bodies() {
        assert_eq!(manifest_media_type(br#"{"mediaType":"application/x"}"#), "application/x");
        assert_eq!(manifest_media_type(br#"{"manifests":[]}"#), OCI_INDEX);
        assert_eq!(manifest_media_type(br#"{"layers":[]}"#), OCI_MANIFEST);
        let body: serde_json::Value =
            serde_json::from_str(&ApiError::new(404, "BLOB_UNKNOWN", "no \"x\"").body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(body["errors"][0]["message"], "no \"x\"");
    }
}
