//! The decision record, its canonical bytes and its place in the hash chain, and redaction of its context.
//! Storage, batching and export live beside it in [`crate::log`]; nothing here touches a file.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// `prev_hash` of the first record of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What replaces a redacted value in `context`.
pub const REDACTED: &str = "[redacted]";

/// The one time format of a record: RFC 3339, UTC, milliseconds (`2026-11-23T10:00:00.123Z`). Fixed width, so
/// text order is time order and the store filters on it directly.
const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Formats `t` the way records carry time.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(TIME_FORMAT)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Whether `s` is already in [`format_time`]'s form and a valid time: then it needs no rewriting (records made by
/// [`DecisionRecord::new`] all are).
pub(crate) fn is_stored_time(s: &str) -> bool {
    s.len() == 24 && time::PrimitiveDateTime::parse(s, TIME_FORMAT).is_ok()
}

/// Parses a record time (any RFC 3339 form is accepted; records are written in [`format_time`]'s form).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("invalid RFC 3339 time `{s}`: {e}"))
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// An authorization decision on a request.
    Decision,
    /// A grant or access-request lifecycle event (requested, approved, revoked, ...).
    Lifecycle,
    /// Written by prune: the chain before it was removed; it names where the kept chain starts.
    Checkpoint,
}

impl RecordKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Decision => "decision",
            RecordKind::Lifecycle => "lifecycle",
            RecordKind::Checkpoint => "checkpoint",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "decision" => Some(RecordKind::Decision),
            "lifecycle" => Some(RecordKind::Lifecycle),
            "checkpoint" => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
}

/// The outcome a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Held for approval.
    Hold,
    /// Evaluation failed (served as a deny).
    Error,
}

impl Outcome {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Hold => "hold",
            Outcome::Error => "error",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Outcome::Allow),
            "deny" => Some(Outcome::Deny),
            "hold" => Some(Outcome::Hold),
            "error" => Some(Outcome::Error),
            _ => None,
        }
    }
}

/// One entry of the decision log. Field order is part of the format: the canonical bytes are this struct
/// serialized by `serde_json` in declaration order (see [`DecisionRecord::canonical_bytes`]). The JSON Schema is
/// `schemas/decision-record.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// Position in the chain (1, 2, ...), assigned by the writer.
    pub seq: i64,
    /// UUID v7.
    pub id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// `decision`, `lifecycle` or `checkpoint`.
    pub kind: RecordKind,
    /// The proxy's request id, when there was a request.
    pub request_id: Option<String>,
    /// The principal as an entity reference (`User::"alice"`), or empty.
    pub principal: String,
    /// The action (`Action::"deleteDatabase"` or the lifecycle verb), or empty.
    pub action: String,
    /// The resource as an entity reference, or empty.
    pub resource: String,
    /// What mattered for the decision (claims, headers, source IP, ...), after redaction.
    pub context: Map<String, Value>,
    /// The outcome; `None` for checkpoints.
    pub decision: Option<Outcome>,
    /// The determining policies.
    pub policies: Vec<String>,
    /// The grants the decision rested on.
    pub grants_used: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// The bundle revision.
    pub revision: String,
    /// The policy engine (`cedar`, `rego`), or empty.
    pub engine: String,
    /// Time spent deciding, in microseconds.
    pub latency_us: u64,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The HTTP method.
    pub method: Option<String>,
    /// The normalized path the policies saw.
    pub path: Option<String>,
    /// The HTTP status served.
    pub status: Option<u16>,
    /// Whether break-glass access was used.
    pub break_glass: bool,
    /// Dotted `context` paths whose values were masked.
    pub redacted: Vec<String>,
    /// The previous record's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// `hex(sha256(prev_hash || canonical_bytes))`.
    pub hash: String,
}

impl DecisionRecord {
    /// A record of `kind` with a fresh UUID v7 id and the current time; the writer fills `seq`, `prev_hash` and
    /// `hash`.
    pub fn new(kind: RecordKind) -> Self {
        Self::at(kind, OffsetDateTime::now_utc())
    }

    /// Like [`DecisionRecord::new`] at a given time.
    pub fn at(kind: RecordKind, time: OffsetDateTime) -> Self {
        Self::with_id(kind, uuid::Uuid::now_v7().to_string(), time)
    }

    /// Like [`DecisionRecord::at`] with an id the caller already has (the proxy's decision id), so that none is
    /// made only to be replaced.
    pub fn with_id(kind: RecordKind, id: String, time: OffsetDateTime) -> Self {
        DecisionRecord {
            seq: 0,
            id,
            time: format_time(time),
            kind,
            request_id: None,
            principal: String::new(),
            action: String::new(),
            resource: String::new(),
            context: Map::new(),
            decision: None,
            policies: Vec::new(),
            grants_used: Vec::new(),
            errors: Vec::new(),
            revision: String::new(),
            engine: String::new(),
            latency_us: 0,
            client_addr: None,
            method: None,
            path: None,
            status: None,
            break_glass: false,
            redacted: Vec::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// A decision record for `principal` doing `action` on `resource` with `outcome`.
    pub fn decision(
        principal: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        let mut r = Self::new(RecordKind::Decision);
        r.principal = principal.into();
        r.action = action.into();
        r.resource = resource.into();
        r.decision = Some(outcome);
        r
    }

    /// The bytes the hash covers: `serde_json` of the record in field-declaration order, compact, with `hash`
    /// set to `""` and object keys inside `context` sorted (so a store or a reader that reorders keys does not
    /// change the hash). `prev_hash` and `seq` are inside, so a record cannot move or be relinked unnoticed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut c = self.clone();
        c.hash.clear();
        c.context = sorted_map(&self.context);
        serde_json::to_vec(&c).unwrap_or_default()
    }

    /// `hex(sha256(prev_hash || canonical_bytes))` with this record's own `prev_hash`.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(self.canonical_bytes());
        hex::encode(h.finalize())
    }

    /// Puts the record at `seq` after `prev_hash` and seals it (sets `hash`). Used by the writer and by prune.
    pub fn seal(&mut self, seq: i64, prev_hash: &str) {
        let mut canonical = Vec::new();
        self.seal_into(seq, prev_hash, &mut canonical);
    }

    /// [`DecisionRecord::seal`], leaving the canonical bytes it hashed in `canonical` (cleared first), for a caller
    /// that also needs the record's JSON ([`DecisionRecord::sealed_json`]) without serializing it again.
    pub(crate) fn seal_into(&mut self, seq: i64, prev_hash: &str, canonical: &mut Vec<u8>) {
        self.seq = seq;
        prev_hash.clone_into(&mut self.prev_hash);
        sort_in_place(&mut self.context);
        // The same bytes as `canonical_bytes` (context sorted, hash empty) without its clone and second sort: this
        // runs for every record on the writer thread.
        self.hash.clear();
        canonical.clear();
        if serde_json::to_writer(&mut *canonical, &*self).is_err() {
            canonical.clear();
        }
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(&canonical[..]);
        self.hash = hex::encode(h.finalize());
    }

    /// The first half of sealing at `seq` after `prev_hash` (the writer's, which makes the canonical bytes from the
    /// stored columns): sets both, sorts the context, empties `hash`. [`DecisionRecord::finish_seal`] follows.
    pub(crate) fn start_seal(&mut self, seq: i64, prev_hash: &str) {
        self.seq = seq;
        prev_hash.clone_into(&mut self.prev_hash);
        sort_in_place(&mut self.context);
        self.hash.clear();
    }

    /// Sets `hash` from the record's `canonical` bytes (what [`DecisionRecord::canonical_bytes`] would return).
    pub(crate) fn finish_seal(&mut self, canonical: &[u8]) {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(canonical);
        self.hash = hex::encode(h.finalize());
    }

    /// The sealed record's JSON (`serde_json` of it, hash included) from the `canonical` bytes it was sealed with
    /// (as [`DecisionRecord::seal_into`] leaves them): `hash` is the last field, so only its empty value is filled in.
    pub(crate) fn sealed_json(&self, mut canonical: Vec<u8>) -> String {
        const EMPTY_HASH: &[u8] = b"\"hash\":\"\"}";
        if canonical.ends_with(EMPTY_HASH) && self.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            canonical.truncate(canonical.len() - 2);
            canonical.extend_from_slice(self.hash.as_bytes());
            canonical.extend_from_slice(b"\"}");
            if let Ok(s) = String::from_utf8(canonical) {
                return s;
            }
        }
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether `hash` matches the record's content.
    pub fn hash_ok(&self) -> bool {
        self.hash == self.compute_hash()
    }
}

/// Sorts every object's keys in place, at every depth (what `sorted_map` returns, without building a copy);
/// objects already in order are only walked.
fn sort_in_place(m: &mut Map<String, Value>) {
    if !m.keys().is_sorted() {
        m.sort_keys();
    }
    for v in m.values_mut() {
        sort_value_in_place(v);
    }
}

fn sort_value_in_place(v: &mut Value) {
    match v {
        Value::Object(m) => sort_in_place(m),
        Value::Array(a) => a.iter_mut().for_each(sort_value_in_place),
        _ => {}
    }
}

fn sorted_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(sorted_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(sorted_value).collect()),
        other => other.clone(),
    }
}

fn sorted_map(m: &Map<String, Value>) -> Map<String, Value> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    keys.into_iter()
        .filter_map(|k| m.get(k).map(|v| (k.clone(), sorted_value(v))))
        .collect()
}

/// Masks each dotted path of `fields` found in `rec.context` (`headers.authorization`, `claims.email`) with
/// `"[redacted]"` and lists it in `rec.redacted`. Call it before the record is appended: the hash then covers
/// the masked value, and the secret never reaches the disk. Paths that are absent are not listed.
pub fn redact(rec: &mut DecisionRecord, fields: &[String]) {
    for field in fields {
        let mut parts = field.split('.').filter(|p| !p.is_empty()).peekable();
        let mut cur: &mut Map<String, Value> = &mut rec.context;
        let mut masked = false;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                if let Some(v) = cur.get_mut(part) {
                    *v = Value::String(REDACTED.to_string());
                    masked = true;
                }
                break;
            }
            match cur.get_mut(part) {
                Some(Value::Object(next)) => cur = next,
                _ => break,
            }
        }
        if masked && !rec.redacted.iter().any(|r| r == field) {
            rec.redacted.push(field.clone());
        }
    }
}

/// The query parameters whose values are redacted unless `[log] redact_query` says otherwise.
pub const DEFAULT_REDACT_QUERY: [&str; 7] = [
    "token",
    "key",
    "api_key",
    "secret",
    "password",
    "signature",
    "access_token",
];

/// `query` (without `?`) with the value of each parameter named in `names` (case-insensitive, the name
/// percent-decoded and `+` read as a space, as a backend would read it) replaced by [`REDACTED`]; `None` when nothing
/// was redacted. Both `&` and `;` separate parameters, so `a=1;token=x` hides `x` from servers that split on either.
pub fn redacted_query(query: &str, names: &[String]) -> Option<String> {
    if names.is_empty() || query.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    let mut masked = false;
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let (param, after) = rest.split_at(end);
        match param.split_once('=') {
            Some((name, value))
                if !value.is_empty()
                    && names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(&query_name(name))) =>
            {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
                masked = true;
            }
            _ => out.push_str(param),
        }
        let mut chars = after.chars();
        match chars.next() {
            Some(sep) => {
                out.push(sep);
                rest = chars.as_str();
            }
            None => break,
        }
    }
    masked.then_some(out)
}

/// A query parameter's name as a backend reads it: `+` is a space, escapes decoded (bytes that are not UTF-8 are
/// replaced, and then match no configured name).
fn query_name(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Redacts the values of the query parameters named in `names` (see [`redacted_query`]) wherever a record carries
/// the query: `context.query`, and `path` if it holds one. Lists `query` in `rec.redacted` when something was masked.
/// Call it before the record is appended, as [`redact`].
pub fn redact_query(rec: &mut DecisionRecord, names: &[String]) {
    let mut masked = false;
    if let Some(Value::String(q)) = rec.context.get_mut("query") {
        if let Some(r) = redacted_query(q, names) {
            *q = r;
            masked = true;
        }
    }
    if let Some(path) = rec.path.as_mut() {
        if let Some((p, q)) = path.split_once('?') {
            if let Some(r) = redacted_query(q, names) {
                *path = format!("{p}?{r}");
                masked = true;
            }
        }
    }
    if masked && !rec.redacted.iter().any(|r| r == "query") {
        rec.redacted.push("query".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        DEFAULT_REDACT_QUERY.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn query_secrets_are_redacted_by_name_and_the_rest_kept() {
        let q = |s: &str| redacted_query(s, &names());
        assert_eq!(
            q("api_key=s3cret&x=1").as_deref(),
            Some("api_key=[redacted]&x=1")
        );
        assert_eq!(
            q("x=1&API_KEY=a&Token=b&access_token=c&password=d&signature=e&secret=f&key=g")
                .as_deref(),
            Some(
                "x=1&API_KEY=[redacted]&Token=[redacted]&access_token=[redacted]&password=[redacted]\
                 &signature=[redacted]&secret=[redacted]&key=[redacted]"
            )
        );
        // Spelled as a backend would decode it, or hidden behind `;`.
        assert_eq!(
            q("api%5Fkey=s3cret").as_deref(),
            Some("api%5Fkey=[redacted]")
        );
        assert_eq!(
            q("a=1;token=s3cret").as_deref(),
            Some("a=1;token=[redacted]")
        );
        assert_eq!(q("x=1&keys=2&monkey=3&token"), None);
        assert_eq!(q(""), None);
        assert_eq!(redacted_query("token=x", &[]), None);
        assert_eq!(
            redacted_query("sig=x&token=y", &["SIG".to_string()]).as_deref(),
            Some("sig=[redacted]&token=y")
        );
    }

    #[test]
    fn redact_query_masks_the_context_and_the_path() {
        let mut r = DecisionRecord::new(RecordKind::Decision);
        r.context
            .insert("query".into(), Value::String("api_key=s3cret&x=1".into()));
        r.path = Some("/a?token=t0k&y=2".into());
        redact_query(&mut r, &names());
        assert_eq!(r.context["query"], "api_key=[redacted]&x=1");
        assert_eq!(r.path.as_deref(), Some("/a?token=[redacted]&y=2"));
        assert_eq!(r.redacted, vec!["query".to_string()]);
        let mut clean = DecisionRecord::new(RecordKind::Decision);
        clean
            .context
            .insert("query".into(), Value::String("x=1".into()));
        redact_query(&mut clean, &names());
        assert!(clean.redacted.is_empty());
    }

    #[test]
    fn seal_hashes_exactly_the_canonical_bytes() {
        let mut r = DecisionRecord::decision(
            r#"User::"alice""#,
            r#"Action::"readPayment""#,
            r#"Payment::"p-1""#,
            Outcome::Allow,
        );
        // Keys out of order at two depths: the canonical form sorts them, and so must the sealed hash.
        r.context = serde_json::json!({
            "z": 1, "claims": {"sub": "alice", "groups": ["b", "a"], "aud": "x"}, "a": [{"y": 1, "b": 2}]
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        r.seal(7, "prev");
        assert_eq!(r.hash, r.compute_hash());
        assert!(r.hash_ok());
        let mut other = r.clone();
        other.context.insert("z".into(), Value::from(2));
        assert!(!other.hash_ok());
    }

    #[test]
    fn only_a_valid_time_in_the_stored_form_is_taken_as_it_is() {
        assert!(is_stored_time("2026-11-23T10:00:00.123Z"));
        assert!(is_stored_time(&format_time(OffsetDateTime::now_utc())));
        for bad in [
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00.123+00:00",
            "2026-02-30T10:00:00.123Z",
            "2026-13-01T10:00:00.123Z",
            "2026-11-23T25:00:00.123Z",
            "2026-11-23 10:00:00.123Z",
            "2026-11-23T10:00:00.1234",
            "",
        ] {
            assert!(!is_stored_time(bad), "{bad}");
        }
    }

    #[test]
    fn the_sealed_json_is_the_records_json_and_the_canonical_bytes_are_what_was_hashed() {
        let mut r = DecisionRecord::decision("User::\"a\"", "read", "Doc::\"d\"", Outcome::Allow);
        r.context
            .insert("z".into(), Value::from("quote \" and \\ and é"));
        r.context
            .insert("a".into(), serde_json::json!({"y": 1, "b": [true]}));
        r.grants_used = vec!["g1".into()];
        let mut canonical = Vec::new();
        r.seal_into(7, GENESIS_HASH, &mut canonical);
        assert!(r.hash_ok());
        assert_eq!(canonical, r.canonical_bytes());
        let json = r.sealed_json(canonical);
        assert_eq!(json, serde_json::to_string(&r).unwrap());
        assert_eq!(serde_json::from_str::<DecisionRecord>(&json).unwrap(), r);
    }
}
