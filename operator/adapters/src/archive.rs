//! The backup archive format: a tar of JSON entries compressed with zstd, with `manifest.json` (every
//! entry's SHA-256 and size) as its last entry. Secrets are sealed with AES-256-GCM before they go in: a
//! random 96-bit nonce per Secret, stored in front of the ciphertext; the Secret's name is the associated
//! data, so a sealed Secret cannot be swapped for another. Nothing here logs; errors never carry entry
//! contents.

use std::io::{Read as _, Write as _};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use azora_core::backup::{Entry, MANIFEST, Manifest};
use azora_core::replication::hex;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// zstd level: fast, and tenants' JSON compresses well even so.
const LEVEL: i32 = 3;
/// The most bytes an archive may expand to when read (a corrupt or hostile archive cannot exhaust memory).
pub const MAX_EXPANDED: u64 = 512 * 1024 * 1024;

/// Archive errors. Messages name entries by path, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The key is not 32 bytes (raw, or base64 of 32 bytes). Its actual length is not said.
    #[error("the encryption key must be 32 bytes (raw or base64 of 32 bytes)")]
    KeyLength,
    /// Writing or reading the archive failed.
    #[error("archive: {0}")]
    Format(String),
    /// An entry's checksum or the manifest does not match.
    #[error("archive does not match its manifest: {0}")]
    Mismatch(String),
    /// A sealed Secret could not be opened (wrong key or altered bytes).
    #[error("cannot decrypt {0}: wrong key or altered data")]
    Decrypt(String),
}

/// A 256-bit key for Secrets.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A key from a Secret's value: 32 raw bytes, or base64 of 32 bytes (whitespace trimmed).
    pub fn from_secret_value(v: &[u8]) -> Result<Self, ArchiveError> {
        if v.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(v);
            return Ok(Self(k));
        }
        let text = std::str::from_utf8(v).map(str::trim).unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| ArchiveError::KeyLength)?;
        if decoded.len() != 32 {
            return Err(ArchiveError::KeyLength);
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&decoded);
        Ok(Self(k))
    }

    /// A public id of the key (first 16 hex digits of SHA-256 over a domain tag and the key): lets a
    /// restore say "wrong key" without revealing anything of it.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"azora-backup-key-id:");
        h.update(self.0);
        hex(&h.finalize())[..16].to_string()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }

    /// Seals `plain` bound to `aad`: nonce (12 bytes) followed by ciphertext and tag.
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<Vec<u8>, ArchiveError> {
        let nonce_bytes: [u8; 12] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        let ct = self
            .cipher()
            .encrypt(
                nonce,
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ArchiveError::Format(format!("sealing {aad} failed")))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens what [`SecretKey::seal`] sealed with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, ArchiveError> {
        if sealed.len() < 12 + 16 {
            return Err(ArchiveError::Decrypt(aad.to_string()));
        }
        let (nonce, ct) = sealed.split_at(12);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ArchiveError::Decrypt(aad.to_string()))
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes an archive entry by entry; [`Builder::finish`] appends the manifest and returns the bytes.
pub struct Builder {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    entries: Vec<Entry>,
}

impl Builder {
    /// An empty archive.
    pub fn new() -> Result<Self, ArchiveError> {
        let enc = zstd::stream::write::Encoder::new(Vec::new(), LEVEL).map_err(fmt)?;
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            entries: Vec::new(),
        })
    }

    /// Adds one entry (its checksum goes into the manifest).
    pub fn add(&mut self, mut entry: Entry, bytes: &[u8]) -> Result<(), ArchiveError> {
        entry.sha256 = sha256_hex(bytes);
        entry.size = bytes.len() as u64;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, &entry.path, bytes)
            .map_err(fmt)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Appends the manifest (with every entry) and returns the archive's bytes and the manifest.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<(Vec<u8>, Manifest), ArchiveError> {
        manifest.entries = std::mem::take(&mut self.entries);
        manifest.archive_sha256 = None;
        let text = serde_json::to_vec_pretty(&manifest).map_err(fmt)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, MANIFEST, text.as_slice())
            .map_err(fmt)?;
        let enc = self.tar.into_inner().map_err(fmt)?;
        let mut bytes = enc.finish().map_err(fmt)?;
        bytes.flush().map_err(fmt)?;
        manifest.archive_sha256 = Some(sha256_hex(&bytes));
        Ok((bytes, manifest))
    }
}

fn fmt(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Format(e.to_string())
}

/// An archive read back and checked: the manifest inside it, and every entry whose checksum matched.
#[derive(Debug)]
pub struct Opened {
    /// The manifest inside the archive.
    pub manifest: Manifest,
    /// Entries in archive order, each with its bytes.
    pub entries: Vec<(Entry, Vec<u8>)>,
}

/// Reads an archive and checks it against `expected_sha256` (the archive's) and its manifest (every entry
/// present with the recorded SHA-256 and size, nothing extra). Expansion is bounded by [`MAX_EXPANDED`].
pub fn open(bytes: &[u8], expected_sha256: &str) -> Result<Opened, ArchiveError> {
    let actual = sha256_hex(bytes);
    if actual != expected_sha256 {
        return Err(ArchiveError::Mismatch(format!(
            "archive SHA-256 is {actual}, the backup recorded {expected_sha256}"
        )));
    }
    let dec = zstd::stream::read::Decoder::new(bytes).map_err(fmt)?;
    let mut tar = tar::Archive::new(dec.take(MAX_EXPANDED));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in tar.entries().map_err(fmt)? {
        let mut e = e.map_err(fmt)?;
        let path = e.path().map_err(fmt)?.to_string_lossy().into_owned();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).map_err(fmt)?;
        files.push((path, buf));
    }
    let Some((_, text)) = files.iter().find(|(p, _)| p == MANIFEST) else {
        return Err(ArchiveError::Mismatch("no manifest inside the archive".into()));
    };
    let manifest: Manifest = serde_json::from_slice(text)
        .map_err(|e| ArchiveError::Mismatch(format!("manifest does not parse: {e}")))?;
    let mut entries = Vec::new();
    for want in &manifest.entries {
        let Some((_, b)) = files.iter().find(|(p, _)| p == &want.path) else {
            return Err(ArchiveError::Mismatch(format!("{} is missing", want.path)));
        };
        if sha256_hex(b) != want.sha256 || b.len() as u64 != want.size {
            return Err(ArchiveError::Mismatch(format!(
                "{} has another checksum",
                want.path
            )));
        }
        entries.push((want.clone(), b.clone()));
    }
    if let Some((extra, _)) = files
        .iter()
        .find(|(p, _)| p != MANIFEST && !manifest.entries.iter().any(|e| &e.path == p))
    {
        return Err(ArchiveError::Mismatch(format!("{extra} is not in the manifest")));
    }
    Ok(Opened { manifest, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: 1,
            tenant: "acme".into(),
            backup: "b1".into(),
            namespace: "tenant-acme".into(),
            source_region: "africa".into(),
            data_time: "2026-01-01T00:00:00Z".into(),
            secrets_included: true,
            key_id: None,
            entries: vec![],
            archive_sha256: None,
        }
    }

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: "object".into(),
            object: None,
            sha256: String::new(),
            size: 0,
        }
    }

    #[test]
    fn an_archive_round_trips_and_sealed_secrets_need_the_key() {
        let key = SecretKey::from_secret_value(&[7u8; 32]).unwrap();
        let sealed = key.seal(b"canary-value", "secrets/db").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"canary-value"));
        let mut b = Builder::new().unwrap();
        b.add(entry("objects/v1/ConfigMap/c.json"), b"{\"data\":1}")
            .unwrap();
        b.add(entry("secrets/db"), &sealed).unwrap();
        let (bytes, m) = b.finish(manifest()).unwrap();
        let sha = m.archive_sha256.clone().unwrap();
        let opened = open(&bytes, &sha).unwrap();
        assert_eq!(opened.entries.len(), 2);
        assert_eq!(
            key.open(&opened.entries[1].1, "secrets/db").unwrap(),
            b"canary-value"
        );
        // bound to the name: another entry's name does not open it
        assert!(key.open(&opened.entries[1].1, "secrets/other").is_err());
        let wrong = SecretKey::from_secret_value(&[8u8; 32]).unwrap();
        assert!(wrong.open(&opened.entries[1].1, "secrets/db").is_err());
        assert_ne!(key.id(), wrong.id());
    }

    #[test]
    fn a_corrupt_archive_is_refused() {
        let mut b = Builder::new().unwrap();
        b.add(entry("a.json"), b"{}").unwrap();
        let (mut bytes, m) = b.finish(manifest()).unwrap();
        let sha = m.archive_sha256.unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        assert!(matches!(open(&bytes, &sha), Err(ArchiveError::Mismatch(_))));
    }

    #[test]
    fn keys_are_32_bytes_raw_or_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(SecretKey::from_secret_value(format!("{b64}\n").as_bytes()).is_ok());
        assert!(matches!(
            SecretKey::from_secret_value(b"short"),
            Err(ArchiveError::KeyLength)
        ));
        assert_eq!(format!("{:?}", SecretKey([1; 32])), "SecretKey(<redacted>)");
    }
}
