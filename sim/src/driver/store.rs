//! Where a socket run keeps blob bytes.
//!
//! - In memory ([`generate_blobs`]): turmoil's simulated hosts, whose blobs are small. Origins serve
//!   the blob's bytes, agents keep every piece they receive (the protocol core's own content).
//! - On disk ([`generate_blob_files`], `--engine real`), as Kraken's agents keep them: every blob is
//!   generated once into the run's data folder (what the origins serve, read at each upload), and
//!   every agent has one file per blob it downloads, `agent-<n>/<digest>`, sized at the first piece
//!   and written piece by piece at the piece's offset. The protocol core then holds no bytes: a piece
//!   reaches it as a [`Payload::Tagged`](shoal_protocols::Payload) carrying the CRC32 the driver
//!   computed over the bytes it read, so the core's checks (CRC32 against the metainfo, the peer
//!   closed on a bad piece) are unchanged; the driver writes the bytes only once the core took the
//!   piece, hashes the whole file (SHA-256) when the download completes, and reads each piece from
//!   the file, into one reused buffer per connection, when it uploads. Memory no longer grows with
//!   the blobs; the page cache holds them.
//!
//! File I/O is synchronous on the run's single thread: a piece is written, and an upload chunk
//! read, in one call on a file the page cache holds — microseconds, against the milliseconds a
//! piece takes on the wire.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};
use shoal_protocols::metainfo::{Info, MetaInfo};
use shoal_protocols::{Digest, PieceIndex};

use crate::build::derive_seed;
use crate::scenario::Scenario;

/// Most bytes of blob content the in-memory store generates and holds (every node keeps what it
/// downloads in memory).
pub const MAX_CONTENT_BYTES: u64 = 2 << 30;

/// Bytes generated, hashed and written at a time.
const GEN_CHUNK: usize = 1 << 20;

/// A blob's generated content and its metainfo (cut at the origins' piece length).
#[derive(Debug)]
pub struct BlobData {
    pub digest: Digest,
    pub metainfo: MetaInfo,
    pub bytes: BlobBytes,
}

/// Where a blob's bytes are.
#[derive(Debug)]
pub enum BlobBytes {
    Memory(bytes::Bytes),
    /// The generated blob in the data folder, open for reading.
    File {
        path: PathBuf,
        file: File,
    },
}

impl BlobData {
    pub fn size(&self) -> u64 {
        self.metainfo.length()
    }

    /// The byte offset of piece `i` in the blob.
    pub fn piece_offset(&self, i: PieceIndex) -> u64 {
        u64::from(i) * self.metainfo.piece_length()
    }
}

/// The content generator of blob `i`: the same bytes in memory and on disk.
fn content_rng(s: &Scenario, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(s.seed, "blob-content", i as u64))
}

fn piece_length(s: &Scenario, size: u64) -> u64 {
    s.protocol.origin.piece_lengths.select(size)
}

/// Generates every blob of a scenario from its seed, in memory. Refuses more than
/// [`MAX_CONTENT_BYTES`].
pub fn generate_blobs(s: &Scenario) -> Result<Vec<BlobData>, String> {
    let total: u64 = s.workload.blobs.iter().map(|b| b.size).sum();
    if total > MAX_CONTENT_BYTES {
        return Err(format!(
            "--engine turmoil holds real blob bytes in memory: the scenario's blobs add up to {total} bytes, \
             more than the limit of {MAX_CONTENT_BYTES}; use --engine des, --engine real (blobs on disk) \
             or smaller blobs"
        ));
    }
    s.workload
        .blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut v = vec![0u8; usize::try_from(b.size).expect("bounded by MAX_CONTENT_BYTES")];
            content_rng(s, i).fill_bytes(&mut v);
            let metainfo = MetaInfo::from_blob(&v, piece_length(s, b.size))
                .map_err(|e| format!("blob `{}`: {e}", b.name))?;
            Ok(BlobData { digest: metainfo.digest(), metainfo, bytes: BlobBytes::Memory(v.into()) })
        })
        .collect()
}

/// A run's data folder: removed, with everything in it, when dropped (also when the run fails or is
/// interrupted), unless kept.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    keep: bool,
}

impl DataDir {
    /// Creates `parent/shoal-data-<pid>-<n>`, a folder of this run's own (`parent` is created if
    /// missing). With `keep` the folder outlives the run (it holds a file `KEPT`). Folders of runs
    /// whose process is gone and that were not kept (killed before they could clean up) are
    /// removed first.
    pub fn create(parent: &Path, keep: bool) -> Result<DataDir, String> {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating the data folder {}: {e}", parent.display()))?;
        remove_stale(parent);
        for n in 0..1000u32 {
            let root = parent.join(format!("shoal-data-{}-{n}", std::process::id()));
            match std::fs::create_dir(&root) {
                Ok(()) => return Ok(DataDir { root, keep }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating the data folder {}: {e}", root.display())),
            }
        }
        Err(format!("creating the data folder: too many shoal-data-* folders in {}", parent.display()))
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.keep {
            let _ = std::fs::write(self.root.join("KEPT"), b"kept by --keep-data\n");
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Removes `shoal-data-<pid>-<n>` folders in `parent` whose process no longer runs and that hold
/// no `KEPT` file.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("shoal-data-")) else { continue };
        let Some(pid) = rest.split_once('-').and_then(|(p, _)| p.parse::<u32>().ok()) else { continue };
        let path = e.path();
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && !path.join("KEPT").exists()
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Bytes the disk store of a run writes: every blob once (what origins serve), plus every blob
/// each host pulls.
pub fn disk_bytes_needed(s: &Scenario) -> u64 {
    let blobs: u64 = s.workload.blobs.iter().map(|b| b.size).sum();
    let per_host = crate::scenario::blobs_per_host(s);
    let pulled: u64 = per_host.iter().flat_map(|bs| bs.iter()).map(|&b| s.workload.blobs[b].size).sum();
    blobs.saturating_add(pulled)
}

/// Free bytes on the file system that holds `path`, for an unprivileged user.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (avail, frsize) = (u64::from(st.blocks_available()), u64::from(st.fragment_size()));
    Ok(avail.saturating_mul(frsize))
}

/// Refuses a run whose blobs would not fit on the disk of `dir` (with a 5 % margin).
pub fn check_disk(s: &Scenario, dir: &Path) -> Result<(), String> {
    let need = disk_bytes_needed(s);
    let free = free_bytes(dir).map_err(|e| format!("checking free space on {}: {e}", dir.display()))?;
    if need.saturating_add(need / 20) > free {
        return Err(format!(
            "--engine real keeps blobs on disk: this run writes about {} to {} (every blob once for the \
             origins, plus what every host pulls), and only {} is free there; pass --data-dir on a \
             larger disk, or lower topology.hosts or the blobs' sizes",
            crate::sizing::human_bytes(need),
            dir.display(),
            crate::sizing::human_bytes(free)
        ));
    }
    Ok(())
}

/// Generates every blob of a scenario from its seed into `dir/origin/<digest>` (the same bytes as
/// [`generate_blobs`]), computing its SHA-256 and piece CRC32s on the way; holds no blob in memory.
pub fn generate_blob_files(s: &Scenario, dir: &DataDir) -> Result<Vec<BlobData>, String> {
    let origin = dir.path().join("origin");
    std::fs::create_dir_all(&origin).map_err(|e| format!("creating {}: {e}", origin.display()))?;
    let mut buf = vec![0u8; GEN_CHUNK];
    let mut out = Vec::with_capacity(s.workload.blobs.len());
    for (i, b) in s.workload.blobs.iter().enumerate() {
        let part = origin.join(format!("blob-{i}.part"));
        let werr = |e: io::Error| format!("writing {}: {e}", part.display());
        let mut f = File::create(&part).map_err(werr)?;
        let mut rng = content_rng(s, i);
        let piece_len = piece_length(s, b.size);
        let mut hasher = PieceHasher::new(piece_len);
        let mut left = b.size;
        while left > 0 {
            let n = left.min(GEN_CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            rng.fill_bytes(chunk);
            hasher.update(chunk);
            f.write_all(chunk).map_err(werr)?;
            left -= n as u64;
        }
        f.sync_data().map_err(werr)?;
        drop(f);
        let metainfo = hasher.finish().map_err(|e| format!("blob `{}`: {e}", b.name))?;
        let digest = metainfo.digest();
        let path = origin.join(digest.hex());
        std::fs::rename(&part, &path).map_err(|e| format!("renaming {}: {e}", part.display()))?;
        let file = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        out.push(BlobData { digest, metainfo, bytes: BlobBytes::File { path, file } });
    }
    Ok(out)
}

/// The SHA-256 of a blob and the CRC32 of each of its pieces, computed as its bytes stream by.
#[derive(Debug)]
pub struct PieceHasher {
    piece_len: u64,
    sha: Sha256,
    sums: Vec<u32>,
    crc: crc32fast::Hasher,
    in_piece: u64,
    len: u64,
}

impl PieceHasher {
    pub fn new(piece_len: u64) -> Self {
        PieceHasher {
            piece_len: piece_len.max(1),
            sha: Sha256::new(),
            sums: Vec::new(),
            crc: crc32fast::Hasher::new(),
            in_piece: 0,
            len: 0,
        }
    }

    /// The next bytes of the blob.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = bytes.len().min((self.piece_len - self.in_piece) as usize);
            self.crc.update(&bytes[..take]);
            self.in_piece += take as u64;
            bytes = &bytes[take..];
            if self.in_piece == self.piece_len {
                self.sums.push(std::mem::take(&mut self.crc).finalize());
                self.in_piece = 0;
            }
        }
    }

    /// The blob's metainfo (named by the SHA-256 of every byte given).
    pub fn finish(mut self) -> Result<MetaInfo, shoal_protocols::metainfo::MetaInfoError> {
        if self.in_piece > 0 {
            self.sums.push(self.crc.finalize());
        }
        let digest = Digest::from_raw(self.sha.finalize().into());
        MetaInfo::new(Info {
            piece_length: self.piece_len,
            piece_sums: self.sums,
            name: digest.hex(),
            length: self.len,
        })
    }
}

/// An agent's file of one blob, `agent-<n>/<digest>` in the data folder, written and read through
/// the page cache.
#[derive(Debug)]
pub struct AgentFile {
    pub path: PathBuf,
    pub file: File,
}

impl AgentFile {
    /// Opens agent `node`'s file of `blob` (prepared by [`prefill_agent_files`], or created
    /// here), sized to the blob.
    pub fn create(dir: &Path, node: u32, blob: &BlobData) -> io::Result<AgentFile> {
        let folder = dir.join(format!("agent-{node}"));
        std::fs::create_dir_all(&folder)?;
        let path = folder.join(blob.digest.hex());
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        file.set_len(blob.size())?;
        Ok(AgentFile { path, file })
    }

    /// Writes a piece's bytes at its offset.
    pub fn write_piece(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }
}

/// Writes every agent's file of every blob it pulls in full, with zeros, before the run's clock
/// starts, so that the run's piece writes land on pages the page cache already holds.
///
/// Why: on the 2-core development VM, memory the kernel hands out fresh costs about 3 ms per MiB
/// on first touch (the host backs it lazily, and takes back what the guest frees: measured with a
/// Python loop of 4 MiB `pwrite`s, 330 MiB/s into fresh page cache against 2.7 GiB/s over pages
/// just freed), which made the writes of a 64-host agree-16 run (4 GiB) half of its CPU, inside
/// the measured time. Prefilling moves that cost before the clock (about 12 s at 64 hosts there);
/// on a machine without the effect it costs one sequential write of the same bytes.
pub fn prefill_agent_files(s: &Scenario, blobs: &[BlobData], dir: &DataDir) -> Result<(), String> {
    let zeros = vec![0u8; GEN_CHUNK];
    for (host, pulled) in crate::scenario::blobs_per_host(s).iter().enumerate() {
        for &b in pulled {
            let f = AgentFile::create(dir.path(), host as u32, &blobs[b])
                .map_err(|e| format!("creating agent {host}'s file of blob {}: {e}", blobs[b].digest))?;
            let mut at = 0u64;
            while at < blobs[b].size() {
                let n = (blobs[b].size() - at).min(GEN_CHUNK as u64) as usize;
                f.write_piece(at, &zeros[..n]).map_err(|e| format!("writing {}: {e}", f.path.display()))?;
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Whether the SHA-256 of the file at `path` is `digest` (read in chunks; for a blocking thread).
pub fn file_matches(path: &Path, digest: &Digest) -> io::Result<bool> {
    let f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; GEN_CHUNK];
    let mut at = 0u64;
    loop {
        let n = f.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(<[u8; 32]>::from(h.finalize()) == *digest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(sizes: &[&str], piece: &str) -> Scenario {
        let blobs: String = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| format!("[[workload.blobs]]\nname = \"b{i}\"\nsize = \"{s}\"\n"))
            .collect();
        let layers: Vec<String> = (0..sizes.len()).map(|i| format!("\"b{i}\"")).collect();
        let toml = format!(
            "name = \"t\"\nseed = 7\n[topology]\nhosts = 3\nupload_bytes_per_s = \"10MB/s\"\n\
             download_bytes_per_s = \"10MB/s\"\n[origins]\ncount = 1\nupload_bytes_per_s = \"10MB/s\"\n\
             download_bytes_per_s = \"10MB/s\"\n[trackers]\ncount = 1\n{blobs}\
             [[workload.images]]\nname = \"i\"\nlayers = [{}]\n[[workload.pulls]]\nimage = \"i\"\n\
             [protocol.origin]\npiece_length = \"{piece}\"\n",
            layers.join(", ")
        );
        Scenario::from_toml(&toml, "t.toml", &[]).expect("a valid scenario")
    }

    #[test]
    fn files_hold_the_same_bytes_and_metainfo_as_memory() {
        // Sizes off the generator's chunk and piece boundaries.
        let s = scenario(&["3MiB", "2500001B"], "700KiB");
        let dir = DataDir::create(&std::env::temp_dir().join("shoal-store-test"), false).unwrap();
        let mem = generate_blobs(&s).unwrap();
        let disk = generate_blob_files(&s, &dir).unwrap();
        assert_eq!(mem.len(), disk.len());
        for (m, d) in mem.iter().zip(&disk) {
            assert_eq!(m.metainfo, d.metainfo);
            let (BlobBytes::Memory(bytes), BlobBytes::File { path, .. }) = (&m.bytes, &d.bytes) else {
                panic!("one blob in memory, one on disk")
            };
            assert_eq!(&std::fs::read(path).unwrap()[..], &bytes[..]);
        }
        let root = dir.path().to_path_buf();
        drop(disk);
        drop(dir);
        assert!(!root.exists(), "the data folder is removed with its DataDir");
    }

    #[test]
    fn folders_of_dead_runs_are_removed_and_kept_ones_stay() {
        let parent = std::env::temp_dir().join(format!("shoal-store-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        // pid 4194304 is above Linux's pid_max limit: never a live process.
        let (dead, kept) = (parent.join("shoal-data-4194304-0"), parent.join("shoal-data-4194304-1"));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::write(kept.join("KEPT"), b"").unwrap();
        let mine = DataDir::create(&parent, true).unwrap();
        assert!(!dead.exists() && kept.exists() && mine.path().exists());
        let path = mine.path().to_path_buf();
        drop(mine);
        assert!(path.join("KEPT").exists(), "a kept folder says so");
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn an_agent_file_is_checked_against_its_digest() {
        let s = scenario(&["1MiB"], "256KiB");
        let dir = DataDir::create(&std::env::temp_dir().join("shoal-store-test"), false).unwrap();
        let blobs = generate_blobs(&s).unwrap();
        let b = &blobs[0];
        let BlobBytes::Memory(bytes) = &b.bytes else { unreachable!() };
        let f = AgentFile::create(dir.path(), 2, b).unwrap();
        // Pieces written out of order.
        for i in [3u32, 0, 2, 1] {
            let at = b.piece_offset(i) as usize;
            f.write_piece(at as u64, &bytes[at..at + (256 << 10)]).unwrap();
        }
        assert!(file_matches(&f.path, &b.digest).unwrap());
        f.write_piece(5, b"x").unwrap();
        assert!(!file_matches(&f.path, &b.digest).unwrap());
    }
}
