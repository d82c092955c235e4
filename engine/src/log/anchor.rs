//! Signed anchors: the chain head signed with an Ed25519 key kept apart from the log, one JSON line per anchor in an
//! append-only anchors file (`<log>.anchors.jsonl` unless configured), as CloudTrail's digest files and Certificate
//! Transparency's signed tree heads. The chain alone cannot tell a rewritten file from an honest one; the anchors can,
//! since nobody without the key can sign the head of a forged chain.
//!
//! An anchor names the head `(seq, head_hash)`, when it was signed, the previous anchor's hash (so the anchors are a
//! chain of their own: one removed from the middle is seen), the replica and why it was written. The writer signs one
//! at start, after every `every_records` records, every `every` while records arrive, and at shutdown; prune signs
//! one after it has pruned. Verification ([`check`]) checks each anchor's signature with the public key alone, the
//! anchors' own chain, that each anchored head is the record stored at that seq, and what may follow the last anchor.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{GENESIS_HASH, format_time};
use super::verify::{FailureKind, VerifyReport};
use super::{AnchorError, Fault};

/// Bytes signed before the anchor's JSON, so an anchor signature can never be taken for another message's.
const DOMAIN: &[u8] = b"jitgate decision-log anchor v1\n";

/// Why an anchor was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnchorReason {
    /// The writer started (after committing what a journal held).
    Start,
    /// `every` passed since the last anchor and records were committed meanwhile.
    Interval,
    /// `every_records` records were committed since the last anchor.
    Count,
    /// Prune removed records and appended its checkpoints.
    Prune,
    /// The writer stopped: nothing is appended after this anchor until the next `start`.
    Shutdown,
}

/// One signed anchor: a line of the anchors file. Schema: `schemas/anchor.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// The head's seq (0: the log was empty).
    pub seq: i64,
    /// The hash of the record at `seq` ([`GENESIS_HASH`] for an empty log).
    pub head_hash: String,
    /// When it was signed (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// [`Anchor::hash`] of the previous anchor in the file ([`GENESIS_HASH`] for the first).
    pub prev_anchor_hash: String,
    /// The replica whose chain this is.
    pub replica: String,
    /// Why it was written.
    pub reason: AnchorReason,
    /// The writer's record interval: at most this many records follow an anchor before the next one.
    pub every_records: u64,
    /// The signing key's id: the first 16 hex digits of the SHA-256 of the public key.
    pub key_id: String,
    /// Hex Ed25519 signature of the anchor with `signature` empty, after a domain prefix.
    pub signature: String,
}

impl Anchor {
    /// The bytes the signature covers: a domain prefix, then the anchor's JSON with `signature` empty.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut a = self.clone();
        a.signature.clear();
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&serde_json::to_vec(&a).unwrap_or_default());
        out
    }

    /// Hex SHA-256 of the whole anchor's JSON (signature included): what the next anchor links to.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }

    /// Whether `key` signed this anchor.
    pub fn signature_ok(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.key_id == key_id(key) && key.verify_strict(&self.signed_bytes(), &sig).is_ok()
    }
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let mut id = hex::encode(Sha256::digest(key.as_bytes()));
    id.truncate(16);
    id
}

/// The default anchors file of a log: `<log>.anchors.jsonl`.
pub fn anchors_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".anchors.jsonl");
    PathBuf::from(p)
}

/// Where the public half of the key at `key` is written: `<key>.pub`.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The anchor signing key (Ed25519), loaded from a PKCS#8 PEM file.
#[derive(Clone)]
pub struct AnchorKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

fn key_err(path: &Path, reason: impl std::fmt::Display) -> Fault {
    Fault::Invalid {
        what: format!("anchor key {}", path.display()),
        reason: reason.to_string(),
    }
}

impl AnchorKey {
    /// Loads the key at `path`, or generates one and writes it there (PKCS#8 PEM, mode 0600, parent directories
    /// created). Either way the public key is written beside it (`<path>.pub`, SPKI PEM) when it is not there, for
    /// auditors who verify with the public key alone.
    pub fn load_or_generate(path: &Path) -> Result<AnchorKey, AnchorError> {
        let key = match std::fs::read_to_string(path) {
            Ok(pem) => Self::parse(path, &pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signing = SigningKey::generate(&mut rand::rngs::OsRng);
                let pem = signing
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| key_err(path, format!("cannot encode: {e}")))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Fault::io(format!("cannot create directory {}", dir.display()), e)
                    })?;
                }
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut f) => {
                        f.write_all(pem.as_bytes())
                            .and_then(|()| f.sync_all())
                            .map_err(|e| {
                                Fault::io(format!("cannot write {}", path.display()), e)
                            })?;
                        tracing::info!(path = %path.display(), "generated a new decision-log anchor key");
                        AnchorKey { signing }
                    }
                    // Created by someone else meanwhile: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path)?,
                    Err(e) => {
                        return Err(
                            Fault::io(format!("cannot create {}", path.display()), e).into()
                        );
                    }
                }
            }
            Err(e) => {
                return Err(Fault::io(format!("cannot read {}", path.display()), e).into());
            }
        };
        let public = public_key_path(path);
        if !public.exists() {
            std::fs::write(&public, key.public_key_pem()?)
                .map_err(|e| Fault::io(format!("cannot write {}", public.display()), e))?;
        }
        Ok(key)
    }

    /// Loads the key at `path`.
    pub fn load(path: &Path) -> Result<AnchorKey, AnchorError> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Fault::io(format!("cannot read {}", path.display()), e))?;
        Ok(Self::parse(path, &pem)?)
    }

    fn parse(path: &Path, pem: &str) -> Result<AnchorKey, Fault> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|signing| AnchorKey { signing })
            .map_err(|e| key_err(path, format!("not an Ed25519 PKCS#8 PEM private key: {e}")))
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The key's id ([`key_id`]).
    pub fn key_id(&self) -> String {
        key_id(&self.verifying_key())
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn public_key_pem(&self) -> Result<String, AnchorError> {
        Ok(self
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Fault::Invalid {
                what: "anchor key".into(),
                reason: format!("cannot encode the public key: {e}"),
            })?)
    }
}

/// Loads a public key to verify anchors with: an SPKI PEM public key (`<key>.pub`), or the private key file itself.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AnchorError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| Fault::io(format!("cannot read {}", path.display()), e))?;
    if let Ok(k) = VerifyingKey::from_public_key_pem(&pem) {
        return Ok(k);
    }
    if let Ok(k) = SigningKey::from_pkcs8_pem(&pem) {
        return Ok(k.verifying_key());
    }
    Err(key_err(
        path,
        "not an Ed25519 public key (SPKI PEM) nor private key (PKCS#8 PEM)",
    )
    .into())
}

/// How a writer (or prune) signs anchors.
#[derive(Debug, Clone)]
pub struct AnchorOptions {
    /// The signing key.
    pub key: Arc<AnchorKey>,
    /// The append-only anchors file.
    pub file: PathBuf,
    /// The replica whose chain this is.
    pub replica: String,
    /// Sign the head at least this often while records arrive.
    pub every: Duration,
    /// Sign the head after at most this many records.
    pub every_records: u64,
}

impl AnchorOptions {
    /// Signs `(seq, head_hash)` and appends it to the anchors file, chained to the file's last anchor, under an
    /// exclusive lock of the file (a prune and a writer may sign at once). Returns `None` without writing when the
    /// file's last anchor is already at or past `seq` (someone signed a newer head meanwhile), unless `reason` is
    /// [`AnchorReason::Shutdown`] or [`AnchorReason::Start`], which are written for an unchanged head too.
    pub(crate) fn append(
        &self,
        seq: i64,
        head_hash: &str,
        reason: AnchorReason,
    ) -> Result<Option<Anchor>, Fault> {
        let file = &self.file;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fault::io(format!("cannot create directory {}", dir.display()), e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(file)
            .map_err(|e| Fault::io(format!("cannot open {}", file.display()), e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Fault::io(format!("cannot lock {}", file.display()), e))?;
        let last = last_anchor(&mut f, file)?;
        if let Some(l) = &last {
            let always = matches!(reason, AnchorReason::Start | AnchorReason::Shutdown);
            if l.seq > seq || (l.seq == seq && !always) {
                return Ok(None);
            }
        }
        let mut a = Anchor {
            seq,
            head_hash: head_hash.to_string(),
            time: format_time(time::OffsetDateTime::now_utc()),
            prev_anchor_hash: last.map_or_else(|| GENESIS_HASH.to_string(), |l| l.hash()),
            replica: self.replica.clone(),
            reason,
            every_records: self.every_records,
            key_id: self.key.key_id(),
            signature: String::new(),
        };
        a.signature = hex::encode(self.key.signing.sign(&a.signed_bytes()).to_bytes());
        let mut line = serde_json::to_vec(&a).map_err(|e| Fault::io("", e))?;
        line.push(b'\n');
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| Fault::io(format!("cannot append to {}", file.display()), e))?;
        Ok(Some(a))
    }
}

/// The last anchor of an open anchors file (read from its end), `None` when it is empty.
fn last_anchor(f: &mut File, path: &Path) -> Result<Option<Anchor>, Fault> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let bad = |reason: &str| Fault::Invalid {
        what: format!("anchors file {}", path.display()),
        reason: reason.to_string(),
    };
    if tail.last() != Some(&b'\n') {
        return Err(bad(
            "it ends in a partial line (truncated or edited): no anchor is appended to it",
        ));
    }
    let body = tail.get(..tail.len() - 1).unwrap_or_default();
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = body.get(start..).unwrap_or_default();
    parse_line(line)
        .map_err(|e| bad(&format!("its last line is not an anchor: {e}")))?
        .map_or_else(
            || Err(bad("its last line is not an anchor")),
            |a| Ok(Some(a)),
        )
}

/// One line of an anchors file or of a JSON Lines sink: `Some` for an anchor (bare or as `{"anchor": ...}`),
/// `None` for a decision record (the sink holds both), an error otherwise.
fn parse_line(line: &[u8]) -> Result<Option<Anchor>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        anchor: Anchor,
    }
    let v: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    if v.get("anchor").is_some() {
        return serde_json::from_value::<Wrapped>(v)
            .map(|w| Some(w.anchor))
            .map_err(|e| e.to_string());
    }
    if v.get("kind").is_some() && v.get("prev_hash").is_some() {
        return Ok(None);
    }
    serde_json::from_value::<Anchor>(v)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The newest anchor in `file` (an anchors file or a JSON Lines sink), `None` when there is none.
pub fn latest_anchor(file: &Path) -> Result<Option<Anchor>, AnchorError> {
    let f =
        File::open(file).map_err(|e| Fault::io(format!("cannot open {}", file.display()), e))?;
    let mut last = None;
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(Some(a)) => last = Some(a),
            Ok(None) => {}
            Err(e) => {
                return Err(Fault::Invalid {
                    what: format!("{}:{}", file.display(), i + 1),
                    reason: format!("not an anchor: {e}"),
                }
                .into());
            }
        }
    }
    Ok(last)
}

/// A problem found in the anchors, as verify reports it.
pub(crate) type Found = (Option<i64>, FailureKind, String);

/// Reads and checks the anchors in `file` against `key`: each parses, is signed by `key`, links to the one before
/// and does not go back in seq. `Ok(Err(..))` is the first problem.
pub(crate) fn read_checked(
    file: &Path,
    key: &VerifyingKey,
) -> Result<Result<Vec<Anchor>, Found>, Fault> {
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err((
                None,
                FailureKind::AnchorMissing,
                format!(
                    "no anchors file at {}: the log cannot be proven against the key",
                    file.display()
                ),
            )));
        }
        Err(e) => return Err(Fault::io(format!("cannot open {}", file.display()), e)),
    };
    let mut chain = AnchorChain::new(key);
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut line_no = 0usize;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        if line.last() != Some(&b'\n') {
            return Ok(Err((
                None,
                FailureKind::AnchorInvalid,
                format!(
                    "{}:{line_no}: partial line: the anchors file was truncated or edited",
                    file.display()
                ),
            )));
        }
        let a = match parse_line(line.get(..line.len() - 1).unwrap_or_default()) {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => {
                return Ok(Err((
                    None,
                    FailureKind::AnchorInvalid,
                    format!("{}:{line_no}: not an anchor: {e}", file.display()),
                )));
            }
        };
        if let Err(found) = chain.push(&format!("{}:{line_no}", file.display()), a) {
            return Ok(Err(found));
        }
    }
    Ok(Ok(chain.finish()))
}

/// Checks anchors one by one, in the order they were appended (a file's lines, or the rows a shipper copied into
/// a store): each signed by the key, linked to the one before it, never going back in seq.
#[derive(Debug)]
pub(crate) struct AnchorChain<'k> {
    key: &'k VerifyingKey,
    want: String,
    prev_hash: String,
    anchors: Vec<Anchor>,
}

impl<'k> AnchorChain<'k> {
    /// An empty chain checked against `key`.
    pub(crate) fn new(key: &'k VerifyingKey) -> Self {
        AnchorChain {
            key,
            want: key_id(key),
            prev_hash: GENESIS_HASH.to_string(),
            anchors: Vec::new(),
        }
    }

    /// Checks the next anchor, read at `at` (named in the problem found).
    pub(crate) fn push(&mut self, at: &str, a: Anchor) -> Result<(), Found> {
        let want = &self.want;
        if a.key_id != *want {
            return Err((
                Some(a.seq),
                FailureKind::AnchorSignature,
                format!(
                    "{at}: signed by key {}, not by the given public key {want}",
                    a.key_id
                ),
            ));
        }
        if !a.signature_ok(self.key) {
            return Err((
                Some(a.seq),
                FailureKind::AnchorSignature,
                format!("{at}: the signature does not verify: the anchor was edited or forged"),
            ));
        }
        if a.prev_anchor_hash != self.prev_hash {
            return Err((
                Some(a.seq),
                FailureKind::AnchorInvalid,
                format!(
                    "{at}: does not link to the anchor before it: an anchor was removed, moved or inserted"
                ),
            ));
        }
        if let Some(p) = self.anchors.last() {
            if a.seq < p.seq {
                return Err((
                    Some(a.seq),
                    FailureKind::AnchorInvalid,
                    format!(
                        "{at}: anchors seq {} after seq {}: the signed head went back",
                        a.seq, p.seq
                    ),
                ));
            }
        }
        self.prev_hash = a.hash();
        self.anchors.push(a);
        Ok(())
    }

    /// The anchors checked so far, in order.
    pub(crate) fn finish(self) -> Vec<Anchor> {
        self.anchors
    }
}

/// Checks the stored chain (already walked into `report`: from `chain_start`, where the kept chain starts after a
/// prune, to `report.last_seq`) against the verified `anchors`: every anchored head at or after the chain's start is
/// the record stored at its seq; the chain reaches every anchored seq; and after the last anchor come at most its
/// `every_records` records (checkpoints aside), none at all after a shutdown anchor. `pruned` is
/// `(pruned_through, last_pruned_hash)` from the newest checkpoint.
pub(crate) fn check(
    conn: &Connection,
    anchors: &[Anchor],
    chain_start: i64,
    pruned: Option<(i64, &str)>,
    report: VerifyReport,
) -> Result<VerifyReport, Fault> {
    let mut stmt = conn.prepare_cached("SELECT hash FROM decisions WHERE seq = ?1")?;
    let mut hash_at = |seq: i64| -> Result<Option<String>, Fault> {
        Ok(stmt.query_row([seq], |r| r.get(0)).optional()?)
    };
    let mut records_after = |seq: i64| -> Result<u64, Fault> {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM decisions WHERE seq > ?1 AND kind != 'checkpoint'",
            [seq],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    check_with(
        anchors,
        chain_start,
        pruned,
        report,
        &mut hash_at,
        Some(&mut records_after),
    )
}

/// [`check`] over any store of one chain's records: `hash_at(seq)` is the hash of the record stored at `seq`;
/// `records_after(seq)`, when given, counts the records after `seq` that are not checkpoints (for the interval
/// check after the last anchor; a store whose anchors may lag its records leaves it out).
pub(crate) fn check_with<E>(
    anchors: &[Anchor],
    chain_start: i64,
    pruned: Option<(i64, &str)>,
    mut report: VerifyReport,
    hash_at: &mut dyn FnMut(i64) -> Result<Option<String>, E>,
    records_after: Option<&mut dyn FnMut(i64) -> Result<u64, E>>,
) -> Result<VerifyReport, E> {
    report.anchors = anchors.len() as u64;
    let last_seq = report.last_seq.unwrap_or(chain_start - 1);
    let mut good_through = chain_start - 1;
    for a in anchors {
        if a.seq < chain_start {
            // Pruned: only the last pruned record's hash is still known.
            if let Some((through, hash)) = pruned {
                if a.seq == through && a.head_hash != hash {
                    return Ok(report.fail(
                        Some(chain_start),
                        FailureKind::AnchorMismatch,
                        format!(
                            "the newest checkpoint's last pruned record (seq {through}) is not the one signed at {}",
                            a.time
                        ),
                    ));
                }
            } else if a.seq > 0 {
                return Ok(report.fail(
                    Some(chain_start.max(1)),
                    FailureKind::Missing,
                    format!(
                        "the anchor signed at {} names seq {} but the chain starts at seq {chain_start} with no \
                         checkpoint: records were removed",
                        a.time, a.seq
                    ),
                ));
            }
            continue;
        }
        if a.seq > last_seq {
            return Ok(report.fail(
                Some(last_seq + 1),
                FailureKind::Missing,
                format!(
                    "the anchor signed at {} covers records up to seq {} but the log ends at seq {last_seq}: \
                     records were removed (the head rewound, or the log wiped)",
                    a.time, a.seq
                ),
            ));
        }
        let stored = hash_at(a.seq)?;
        if stored.as_deref() != Some(a.head_hash.as_str()) {
            return Ok(report.fail(
                Some(good_through + 1),
                FailureKind::AnchorMismatch,
                format!(
                    "records seq {}..={} do not match the anchor signed at {}: one of them was changed, removed \
                     or inserted and the chain recomputed",
                    good_through + 1,
                    a.seq,
                    a.time
                ),
            ));
        }
        good_through = a.seq;
        report.anchored_seq = Some(a.seq);
    }
    let Some(lastanchor) = anchors.last() else {
        return Ok(report);
    };
    if last_seq > lastanchor.seq {
        if lastanchor.reason == AnchorReason::Shutdown {
            return Ok(report.fail(
                Some(lastanchor.seq + 1),
                FailureKind::Unanchored,
                format!(
                    "records seq {}..={last_seq} follow the writer's shutdown anchor ({}) with no anchor after them: \
                     they were appended without the writer",
                    lastanchor.seq + 1,
                    lastanchor.time
                ),
            ));
        }
        if let Some(records_after) = records_after {
            let after = records_after(lastanchor.seq)?;
            if after > lastanchor.every_records {
                return Ok(report.fail(
                    Some(lastanchor.seq + 1),
                    FailureKind::Unanchored,
                    format!(
                        "{after} records follow the last anchor (seq {}, {}), more than its interval of {}: anchors \
                         are missing",
                        lastanchor.seq, lastanchor.time, lastanchor.every_records
                    ),
                ));
            }
        }
    }
    Ok(report)
}

/// The anchors in `file` after byte `offset` (an anchors file only grows), each with the offset just past its line;
/// a last line not yet ended is left for the next read.
pub(crate) fn read_from(file: &Path, offset: u64) -> Result<Vec<(Anchor, u64)>, Fault> {
    let mut f =
        File::open(file).map_err(|e| Fault::io(format!("cannot open {}", file.display()), e))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(f);
    let mut out = Vec::new();
    let mut at = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        at += n as u64;
        match parse_line(line.get(..line.len() - 1).unwrap_or_default()) {
            Ok(Some(a)) => out.push((a, at)),
            Ok(None) => {}
            Err(e) => {
                return Err(Fault::Invalid {
                    what: format!("anchors file {} at byte {}", file.display(), at - n as u64),
                    reason: format!("not an anchor: {e}"),
                });
            }
        }
    }
    Ok(out)
}

/// Every anchor in `file`, unchecked (for an export's manifest; verification checks them against the key).
pub(crate) fn read_all(file: &Path) -> Result<Vec<Anchor>, Fault> {
    let f =
        File::open(file).map_err(|e| Fault::io(format!("cannot open {}", file.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(Some(a)) => out.push(a),
            Ok(None) => {}
            Err(e) => {
                return Err(Fault::Invalid {
                    what: format!("{}:{}", file.display(), i + 1),
                    reason: format!("not an anchor: {e}"),
                });
            }
        }
    }
    Ok(out)
}
