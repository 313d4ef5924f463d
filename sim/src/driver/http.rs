//! A small HTTP/1.1 codec for the tracker's and origin's endpoints: persistent connections (HTTP/1.1's
//! default keep-alive, one request at a time), bodies sized by `Content-Length`. Malformed or oversized input is refused
//! with an error, never a panic: request heads are capped at [`MAX_HEAD`] bytes and bodies at
//! [`MAX_BODY`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request or status line plus headers.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body (a metainfo of a 3 GB blob in 4 MiB pieces is about 10 KiB of JSON).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded segment by segment by [`Request::segments`].
    pub path: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The path's segments, percent-decoded; `None` if a segment is not valid percent-encoded UTF-8.
    pub fn segments(&self) -> Option<Vec<String>> {
        self.path.trim_start_matches('/').split('/').map(percent_decode).collect()
    }
}

/// A parsed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads the head (up to the blank line) and the body it announces.
async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(Vec<String>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("HTTP head too large"));
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside an HTTP head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(bad("HTTP head too large"));
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("HTTP head is not UTF-8"))?;
    let lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    let mut len = 0usize;
    for l in &lines[1..] {
        let (name, value) = l.split_once(':').ok_or_else(|| bad(format!("malformed header line {l:?}")))?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            len = value.trim().parse().map_err(|_| bad("bad Content-Length"))?;
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("Transfer-Encoding is not supported"));
        }
    }
    if len > MAX_BODY {
        return Err(bad(format!("body of {len} bytes exceeds {MAX_BODY}")));
    }
    let mut body = buf.split_off(head_end + 4);
    if body.len() > len {
        return Err(bad("more bytes than Content-Length"));
    }
    let have = body.len();
    body.resize(len, 0);
    r.read_exact(&mut body[have..]).await?;
    Ok((lines, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Request> {
    let (lines, body) = read_message(r).await?;
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("malformed request line {:?}", lines[0])));
    };
    if !version.starts_with("HTTP/1.") || !path.starts_with('/') {
        return Err(bad(format!("malformed request line {:?}", lines[0])));
    }
    Ok(Request { method: method.to_owned(), path: path.to_owned(), body })
}

pub async fn read_response<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Response> {
    let (lines, body) = read_message(r).await?;
    let mut parts = lines[0].splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(bad("malformed status line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("malformed status line"));
    }
    let status = code.parse().map_err(|_| bad("malformed status code"))?;
    Ok(Response { status, body })
}

pub async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

pub async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn request_round_trips_and_segments_decode() {
        let mut wire = Vec::new();
        let path = format!("/namespace/{}/blobs/abc/metainfo", percent_encode("lib/image:1"));
        block_on(write_request(&mut wire, "GET", "t", &path, b"{}")).unwrap();
        let req = block_on(read_request(&mut &wire[..])).unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.body, b"{}");
        let segs = req.segments().unwrap();
        assert_eq!(segs, ["namespace", "lib/image:1", "blobs", "abc", "metainfo"]);
        let mut wire = Vec::new();
        block_on(write_response(&mut wire, 202, b"")).unwrap();
        assert_eq!(block_on(read_response(&mut &wire[..])).unwrap(), Response { status: 202, body: vec![] });
    }

    #[test]
    fn malformed_and_oversized_input_is_refused() {
        for input in [
            &b"GET /x\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
            b"",
        ] {
            assert!(block_on(read_request(&mut &input[..])).is_err(), "{input:?}");
        }
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert!(block_on(read_request(&mut &huge[..])).is_err());
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
