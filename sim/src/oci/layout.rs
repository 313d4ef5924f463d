//! Container images made from a seed, written as an OCI image layout (image-spec v1.1 `oci-layout`,
//! `index.json`, `blobs/sha256/…`) that `skopeo copy oci:DIR:TAG docker://…` pushes to a registry.
//!
//! Each layer is an uncompressed tar (`application/vnd.oci.image.layer.v1.tar`) holding one file of
//! random bytes, so that runtimes which unpack layers (containerd, podman) accept the image; the
//! config's `rootfs.diff_ids` are the layers' digests (uncompressed, so the same).

use std::io;
use std::path::Path;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocols::Digest;

use super::OCI_MANIFEST;

/// An image: its layers, config and manifest, as bytes.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// A blob's digest.
pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

impl Image {
    /// An image of `layer_sizes.len()` layers, layer i holding a file of `layer_sizes[i]` random
    /// bytes drawn from `seed`.
    pub fn generate(seed: u64, layer_sizes: &[u64]) -> Image {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let mut data = vec![0u8; usize::try_from(size).expect("a layer that fits in memory")];
                rng.fill_bytes(&mut data);
                tar(&[(&format!("layer-{i}.bin"), &data)])
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| digest_of(l).to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("JSON of a value");
        let descriptor = |media: &str, b: &[u8]| serde_json::json!({ "mediaType": media, "digest": digest_of(b).to_string(), "size": b.len() });
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers
                .iter()
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l))
                .collect::<Vec<_>>(),
        }))
        .expect("JSON of a value");
        Image { layers, config, manifest }
    }

    /// The manifest's digest.
    pub fn manifest_digest(&self) -> Digest {
        digest_of(&self.manifest)
    }

    /// Every blob of the image but the manifest: the config, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.config.as_slice()).chain(self.layers.iter().map(Vec::as_slice))
    }

    /// Writes the image as an OCI image layout in `dir` (created if missing), tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> io::Result<()> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        for b in self.blobs().chain(std::iter::once(self.manifest.as_slice())) {
            std::fs::write(blobs.join(digest_of(b).hex()), b)?;
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": self.manifest_digest().to_string(),
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("JSON of a value"))
    }
}

/// A POSIX ustar archive of regular files (mode 0644, owner 0, mtime 0), ended by two zero blocks.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        assert!(name.len() < 100, "tar names here are short");
        h[..name.len()].copy_from_slice(name);
        let octal = |h: &mut [u8], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o644); // mode
        octal(&mut h, 108, 8, 0); // uid
        octal(&mut h, 116, 8, 0); // gid
        octal(&mut h, 124, 12, data.len() as u64); // size
        octal(&mut h, 136, 12, 0); // mtime
        h[148..156].fill(b' '); // the checksum counts its own field as spaces
        h[156] = b'0'; // a regular file
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_carry_their_checksum_and_size() {
        let t = tar(&[("a.bin", b"hello")]);
        assert_eq!(t.len(), 512 + 512 + 1024);
        let h = &t[..512];
        assert_eq!(&h[..5], b"a.bin");
        assert_eq!(std::str::from_utf8(&h[124..135]).unwrap(), "00000000005");
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h.to_vec();
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(&t[512..517], b"hello");
        assert!(t[517..].iter().all(|&b| b == 0));
    }

    #[test]
    fn images_are_seeded_and_self_consistent() {
        let a = Image::generate(7, &[1000, 3000]);
        let b = Image::generate(7, &[1000, 3000]);
        assert_eq!(a.manifest, b.manifest);
        assert_ne!(a.manifest, Image::generate(8, &[1000, 3000]).manifest);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["layers"][1]["digest"], digest_of(&a.layers[1]).to_string());
        assert_eq!(m["config"]["size"], a.config.len());
        let dir = std::env::temp_dir().join(format!("shoal-layout-test-{}", std::process::id()));
        a.write_layout(&dir, "v1").unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], a.manifest_digest().to_string());
        for blob in a.blobs() {
            let on_disk = std::fs::read(dir.join("blobs/sha256").join(digest_of(blob).hex())).unwrap();
            assert_eq!(on_disk, blob);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
