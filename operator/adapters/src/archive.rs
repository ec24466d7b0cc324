//! The backup archive format: a tar of JSON entries compressed with zstd, with `manifest.json` (every
//! entry's SHA-256 and size) as its last entry. Secrets are sealed with AES-256-GCM before they go in: a
//! random 96-bit nonce per Secret, stored in front of the ciphertext; the Secret's name is the associated
//! data, so a sealed Secret cannot be swapped for another. Nothing here logs; errors never carry entry
//! contents.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use azora_core::backup::{Entry, MANIFEST, Manifest};
use azora_core::replication::hex;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// zstd level: fast, and tenants' JSON compresses well even so.
const LEVEL: i32 = 3;
/// The most bytes an archive's entries may add up to (archives are streamed through scratch files, so this
/// bounds disk and time, not memory).
pub const MAX_EXPANDED: u64 = 16 * 1024 * 1024 * 1024;
/// The largest entry (Kubernetes objects are at most ~1.5 MiB; listings are split well below this). Memory
/// holds one entry at a time, so this bounds what reading an archive needs.
pub const MAX_ENTRY: u64 = 32 * 1024 * 1024;
/// The largest manifest read back.
pub const MAX_MANIFEST: u64 = 128 * 1024 * 1024;

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
    /// Over a limit (an entry or the whole archive).
    #[error("archive too large: {0}")]
    TooLarge(String),
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

/// Passes writes through to `W`, hashing (SHA-256) and counting them.
pub struct HashWriter<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// The SHA-256 (hex) and length of what was written, and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (hex(&self.sha.finalize()), self.len, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 (hex) and length of everything `r` yields, read in small buffers.
pub fn sha256_of_reader(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut w = HashWriter::new(io::sink());
    io::copy(&mut r, &mut w)?;
    let (sha, len, _) = w.finish();
    Ok((sha, len))
}

/// Writes an archive entry by entry into `W` (a scratch file in the operator; memory holds one entry and the
/// manifest's entry list, never the archive). [`Builder::finish`] appends the manifest.
pub struct Builder<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, HashWriter<W>>>,
    entries: Vec<Entry>,
    expanded: u64,
}

/// A finished archive: where it was written, its manifest (with `archive_sha256`) and compressed size.
pub struct Finished<W> {
    /// The writer the archive went to.
    pub out: W,
    /// The manifest, with the archive's SHA-256.
    pub manifest: Manifest,
    /// Compressed size in bytes.
    pub size: u64,
}

impl<W: Write> Builder<W> {
    /// An empty archive written to `out`.
    pub fn new(out: W) -> Result<Self, ArchiveError> {
        let enc = zstd::stream::write::Encoder::new(HashWriter::new(out), LEVEL).map_err(fmt)?;
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            tar,
            entries: Vec::new(),
            expanded: 0,
        })
    }

    /// Adds one entry (its checksum goes into the manifest). An entry over [`MAX_ENTRY`] or an archive over
    /// [`MAX_EXPANDED`] is refused: no restore could read it.
    pub fn add(&mut self, mut entry: Entry, bytes: &[u8]) -> Result<(), ArchiveError> {
        let len = bytes.len() as u64;
        if len > MAX_ENTRY {
            return Err(ArchiveError::TooLarge(format!(
                "{} is {} MiB, over the {} MiB an entry may hold",
                entry.path,
                len / 1024 / 1024,
                MAX_ENTRY / 1024 / 1024
            )));
        }
        self.expanded += len;
        if self.expanded > MAX_EXPANDED {
            return Err(ArchiveError::TooLarge(format!(
                "the tenant's objects exceed {} GiB",
                MAX_EXPANDED / 1024 / 1024 / 1024
            )));
        }
        entry.sha256 = sha256_hex(bytes);
        entry.size = len;
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, &entry.path, bytes)
            .map_err(fmt)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Appends the manifest (with every entry) and finishes the compressed stream.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Finished<W>, ArchiveError> {
        manifest.entries = std::mem::take(&mut self.entries);
        manifest.archive_sha256 = None;
        let text = serde_json::to_vec_pretty(&manifest).map_err(fmt)?;
        // A manifest no reader would take is refused here, not found out at restore time.
        if text.len() as u64 > MAX_MANIFEST {
            return Err(ArchiveError::TooLarge(format!(
                "the manifest of {} entries is over {} MiB",
                manifest.entries.len(),
                MAX_MANIFEST / 1024 / 1024
            )));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, MANIFEST, text.as_slice())
            .map_err(fmt)?;
        let enc = self.tar.into_inner().map_err(fmt)?;
        let mut hashed = enc.finish().map_err(fmt)?;
        hashed.flush().map_err(fmt)?;
        let (sha, size, out) = hashed.finish();
        manifest.archive_sha256 = Some(sha);
        Ok(Finished { out, manifest, size })
    }
}

fn fmt(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Format(e.to_string())
}

fn entries_of<R: Read>(
    r: R,
) -> Result<tar::Archive<io::Take<zstd::stream::read::Decoder<'static, BufReader<R>>>>, ArchiveError> {
    let dec = zstd::stream::read::Decoder::new(r).map_err(fmt)?;
    // Entries, the manifest, and tar's headers and padding (at most 1 KiB per entry, and entries are at
    // least a few bytes each: doubling covers it).
    Ok(tar::Archive::new(dec.take(2 * (MAX_EXPANDED + MAX_MANIFEST))))
}

/// Checks an archive file against `expected_sha256` (the archive's) and the manifest inside it (every entry
/// present with the recorded SHA-256 and size, nothing extra), reading it as a stream: memory holds the
/// manifest, never the archive. Returns the manifest.
pub fn check_file(path: &Path, expected_sha256: &str) -> Result<Manifest, ArchiveError> {
    let (actual, _) = sha256_of_reader(File::open(path).map_err(fmt)?).map_err(fmt)?;
    if actual != expected_sha256 {
        return Err(ArchiveError::Mismatch(format!(
            "archive SHA-256 is {actual}, the backup recorded {expected_sha256}"
        )));
    }
    let mut tar = entries_of(File::open(path).map_err(fmt)?)?;
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut manifest_text = None;
    for e in tar.entries().map_err(fmt)? {
        let mut e = e.map_err(fmt)?;
        let p = e.path().map_err(fmt)?.to_string_lossy().into_owned();
        if p == MANIFEST {
            let mut buf = Vec::new();
            (&mut e).take(MAX_MANIFEST).read_to_end(&mut buf).map_err(fmt)?;
            manifest_text = Some(buf);
            continue;
        }
        let got = sha256_of_reader(&mut e).map_err(fmt)?;
        if seen.insert(p.clone(), got).is_some() {
            return Err(ArchiveError::Mismatch(format!("{p} appears twice")));
        }
    }
    let Some(text) = manifest_text else {
        return Err(ArchiveError::Mismatch("no manifest inside the archive".into()));
    };
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| ArchiveError::Mismatch(format!("manifest does not parse: {e}")))?;
    for want in &manifest.entries {
        match seen.remove(&want.path) {
            None => return Err(ArchiveError::Mismatch(format!("{} is missing", want.path))),
            Some((sha, size)) if sha != want.sha256 || size != want.size => {
                return Err(ArchiveError::Mismatch(format!(
                    "{} has another checksum",
                    want.path
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(ArchiveError::Mismatch(format!("{extra} is not in the manifest")));
    }
    Ok(manifest)
}

/// Reads the entries of an archive checked by [`check_file`], one at a time in archive order: `each` gets
/// the manifest's entry and its bytes (checked again against the manifest) and says whether to go on.
/// Memory holds one entry (at most [`MAX_ENTRY`]).
pub fn read_entries(
    path: &Path,
    manifest: &Manifest,
    mut each: impl FnMut(&Entry, Vec<u8>) -> bool,
) -> Result<(), ArchiveError> {
    let by_path: BTreeMap<&str, &Entry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut tar = entries_of(File::open(path).map_err(fmt)?)?;
    for e in tar.entries().map_err(fmt)? {
        let mut e = e.map_err(fmt)?;
        let p = e.path().map_err(fmt)?.to_string_lossy().into_owned();
        if p == MANIFEST {
            continue;
        }
        let Some(want) = by_path.get(p.as_str()) else {
            return Err(ArchiveError::Mismatch(format!("{p} is not in the manifest")));
        };
        if want.size > MAX_ENTRY {
            return Err(ArchiveError::TooLarge(format!("{p} is over the entry limit")));
        }
        let mut buf = Vec::with_capacity(want.size as usize);
        (&mut e).take(MAX_ENTRY).read_to_end(&mut buf).map_err(fmt)?;
        if buf.len() as u64 != want.size || sha256_hex(&buf) != want.sha256 {
            return Err(ArchiveError::Mismatch(format!("{p} has another checksum")));
        }
        if !each(want, buf) {
            break;
        }
    }
    Ok(())
}

/// Prefix of the operator's scratch files; the process id and its start time follow, so a sweep can tell
/// whose a file is even when a restarted container reuses the process id.
pub const SCRATCH_PREFIX: &str = "azora-backup-";
/// A scratch file not written for this long is left over whoever made it (a run writes its archive within
/// its 15-minute deadline and removes it when it ends).
const SCRATCH_STALE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// When process `pid` started (clock ticks after boot, `/proc/<pid>/stat` field 22); `None` when it is gone.
fn started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's tag in scratch file names: `<pid>.<start time>`.
fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", started(pid).unwrap_or(0))
}

/// A scratch file in `dir` for one archive, removed when dropped.
pub fn scratch(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}-", owner_tag()))
        .suffix(".tar.zst")
        .tempfile_in(dir)
}

/// Whether a scratch file named `name` (without the prefix) belongs to a process that is still running:
/// its pid is alive with the same start time.
fn owner_alive(rest: &str) -> bool {
    let Some((pid, start)) = rest.split('-').next().and_then(|tag| tag.split_once('.')) else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => started(pid) == Some(start),
        _ => false,
    }
}

/// Removes scratch files left in `dir` by a process that is gone (a SIGKILL skips the removal on drop) —
/// its pid not running, or running as another process (a restarted container reuses pid 1) — or not
/// written for half an hour; returns how many were removed. Several operators may share the directory
/// (tests, a node's temp dir): a live process's recent files are left alone.
pub fn sweep_scratch(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(SCRATCH_PREFIX) else {
                return false;
            };
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > SCRATCH_STALE);
            stale || !owner_alive(rest)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
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

    /// Builds an archive into a scratch file; returns the file and the manifest.
    fn built(dir: &Path, add: &[(&str, &[u8])]) -> (tempfile::NamedTempFile, Manifest) {
        let f = scratch(dir).unwrap();
        let mut b = Builder::new(io::BufWriter::new(f.reopen().unwrap())).unwrap();
        for (p, bytes) in add {
            b.add(entry(p), bytes).unwrap();
        }
        let done = b.finish(manifest()).unwrap();
        done.out.into_inner().unwrap().sync_all().unwrap();
        assert_eq!(done.size, f.as_file().metadata().unwrap().len());
        (f, done.manifest)
    }

    fn all_entries(path: &Path, m: &Manifest) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        read_entries(path, m, |e, b| {
            out.push((e.path.clone(), b));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn an_archive_round_trips_through_a_file_and_sealed_secrets_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_secret_value(&[7u8; 32]).unwrap();
        let sealed = key.seal(b"canary-value", "secrets/db").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"canary-value"));
        let (f, m) = built(
            dir.path(),
            &[
                ("objects/v1/ConfigMap/c.json", b"{\"data\":1}"),
                ("secrets/db", &sealed),
            ],
        );
        let sha = m.archive_sha256.clone().unwrap();
        let checked = check_file(f.path(), &sha).unwrap();
        assert_eq!(checked.entries.len(), 2);
        let entries = all_entries(f.path(), &checked);
        assert_eq!(entries[0].1, b"{\"data\":1}");
        assert_eq!(key.open(&entries[1].1, "secrets/db").unwrap(), b"canary-value");
        // bound to the name: another entry's name does not open it
        assert!(key.open(&entries[1].1, "secrets/other").is_err());
        let wrong = SecretKey::from_secret_value(&[8u8; 32]).unwrap();
        assert!(wrong.open(&entries[1].1, "secrets/db").is_err());
        assert_ne!(key.id(), wrong.id());
    }

    #[test]
    fn a_corrupt_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (f, m) = built(dir.path(), &[("a.json", b"{}")]);
        let sha = m.archive_sha256.unwrap();
        let mut bytes = std::fs::read(f.path()).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(f.path(), &bytes).unwrap();
        assert!(matches!(
            check_file(f.path(), &sha),
            Err(ArchiveError::Mismatch(_))
        ));
        // The same bytes under their own checksum still fail: the entries no longer match the manifest.
        let own = sha256_hex(&bytes);
        assert!(check_file(f.path(), &own).is_err());
    }

    #[test]
    fn a_large_archive_streams_and_oversized_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = scratch(dir.path()).unwrap();
        let mut b = Builder::new(io::BufWriter::new(f.reopen().unwrap())).unwrap();
        // 64 entries of 1 MiB of incompressible bytes: 64 MiB through the builder, one entry in memory.
        let mut x: u64 = rand::random::<u64>() | 1;
        for i in 0..64 {
            let bytes: Vec<u8> = (0..1024 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            b.add(entry(&format!("objects/{i}.json")), &bytes).unwrap();
        }
        let too_big = vec![0u8; MAX_ENTRY as usize + 1];
        assert!(matches!(
            b.add(entry("big.json"), &too_big),
            Err(ArchiveError::TooLarge(_))
        ));
        let done = b.finish(manifest()).unwrap();
        drop(done.out);
        let m = check_file(f.path(), done.manifest.archive_sha256.as_deref().unwrap()).unwrap();
        assert_eq!(m.entries.len(), 64);
        let mut n = 0;
        read_entries(f.path(), &m, |e, bytes| {
            n += 1;
            bytes.len() as u64 == e.size
        })
        .unwrap();
        assert_eq!(n, 64);
    }

    #[test]
    fn scratch_files_of_gone_processes_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = |tag: String| {
            let p = dir.path().join(format!("{SCRATCH_PREFIX}{tag}-x.tar.zst"));
            std::fs::write(&p, b"x").unwrap();
            p
        };
        // Ours: kept.
        let mine = scratch(dir.path()).unwrap().keep().unwrap().1;
        // Another live process (several operators share a temp dir): kept.
        let mut sibling = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sibling.id();
        let live = file(format!("{pid}.{}", started(pid).unwrap()));
        // The same pid with another start time (a restarted container reusing its pid): swept.
        let reused = file(format!("{pid}.{}", started(pid).unwrap() + 1));
        // A process that has exited: swept.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = file(format!("{dead}.{}", 1));
        // Not ours at all: kept.
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        assert_eq!(sweep_scratch(dir.path()), 2);
        assert!(!reused.exists() && !gone.exists());
        assert!(mine.exists() && live.exists());
        assert!(dir.path().join("other").exists());
        sibling.kill().unwrap();
        sibling.wait().unwrap();
        // Its process gone, the sibling's file goes too.
        assert_eq!(sweep_scratch(dir.path()), 1);
        assert!(!live.exists() && mine.exists());
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
