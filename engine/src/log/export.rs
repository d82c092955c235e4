//! Export of the decision log (JSON Lines, CSV, OCSF) as a stream with a manifest, and verification of an
//! exported file against its manifest. Reads one row at a time: memory does not grow with the export.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::record::{DecisionRecord, Outcome, RecordKind, format_time, parse_time};
use super::verify::{FailureKind, VerifyReport};
use super::{ExportError, Fault, Filter, db};

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One [`DecisionRecord`] as JSON per line, exactly as chained: verifiable record by record.
    Jsonl,
    /// A header row and one row per record; list fields joined with `;`, `context` as JSON. Columns:
    /// `seq,id,time,kind,request_id,principal,action,resource,decision,policies,grants_used,errors,revision,engine,
    /// latency_us,client_addr,method,path,status,break_glass,redacted,context,prev_hash,hash`.
    Csv,
    /// One OCSF 1.4.0 "API Activity" event (class_uid 6003) as JSON per line; see [`ocsf_event`].
    Ocsf,
}

impl Format {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Ocsf => "ocsf.jsonl",
        }
    }
}

/// Describes an export file so that a later reader can prove it is complete and unchanged. Schema:
/// `schemas/export-manifest.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportManifest {
    /// Format of the file.
    pub format: Format,
    /// Records exported.
    pub records: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Seq of the first exported record.
    pub first_seq: Option<i64>,
    /// Hash of the first exported record.
    pub first_hash: Option<String>,
    /// Seq of the last exported record.
    pub last_seq: Option<i64>,
    /// Hash of the last exported record.
    pub last_hash: Option<String>,
    /// The filters applied.
    pub filter: Filter,
    /// When the export was made (RFC 3339, UTC, milliseconds).
    pub created: String,
    /// The software that wrote it.
    pub generator: String,
}

const CSV_HEADER: [&str; 24] = [
    "seq",
    "id",
    "time",
    "kind",
    "request_id",
    "principal",
    "action",
    "resource",
    "decision",
    "policies",
    "grants_used",
    "errors",
    "revision",
    "engine",
    "latency_us",
    "client_addr",
    "method",
    "path",
    "status",
    "break_glass",
    "redacted",
    "context",
    "prev_hash",
    "hash",
];

/// Counts and hashes the bytes on their way out.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
    bytes: u64,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hasher.update(done);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How often `progress` is called (and once at the end).
const PROGRESS_EVERY: u64 = 4096;

/// Streams the records matching `filter`, in seq order, to `out` in `format`, calling `progress` with the count
/// so far every few thousand records and at the end. Returns the manifest describing exactly the bytes written.
pub fn export(
    path: &Path,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<ExportManifest, ExportError> {
    let conn = db::open_read(path)?;
    // One read transaction: the export is a consistent snapshot even while the writer appends.
    conn.execute_batch("BEGIN")?;
    let mut hashing = Hashing {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut m = ExportManifest {
        format,
        records: 0,
        bytes: 0,
        sha256: String::new(),
        first_seq: None,
        first_hash: None,
        last_seq: None,
        last_hash: None,
        filter: filter.clone(),
        created: format_time(time::OffsetDateTime::now_utc()),
        generator: concat!("jitgate-engine ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    {
        let mut buf = BufWriter::with_capacity(1 << 20, &mut hashing);
        let mut on_record = |m: &mut ExportManifest, r: &DecisionRecord| {
            if m.first_seq.is_none() {
                m.first_seq = Some(r.seq);
                m.first_hash = Some(r.hash.clone());
            }
            m.last_seq = Some(r.seq);
            m.last_hash = Some(r.hash.clone());
            m.records += 1;
            if m.records % PROGRESS_EVERY == 0 {
                progress(m.records);
            }
        };
        match format {
            Format::Jsonl => {
                // Written straight from the stored columns: the same bytes as serializing the decoded record,
                // without building one per row. The hash of the last record is kept in a reused buffer.
                let mut line = Vec::with_capacity(4096);
                let mut last_hash = String::new();
                db::for_each_matching_row(&conn, filter, |row| {
                    line.clear();
                    let seq = jsonl_line(row, &mut line)?;
                    buf.write_all(&line)?;
                    let hash = row.get_ref(23)?.as_str().map_err(|e| Fault::Corrupt {
                        seq,
                        reason: format!("hash: {e}"),
                    })?;
                    if m.first_seq.is_none() {
                        m.first_seq = Some(seq);
                        m.first_hash = Some(hash.to_string());
                    }
                    last_hash.clear();
                    last_hash.push_str(hash);
                    m.last_seq = Some(seq);
                    m.records += 1;
                    if m.records % PROGRESS_EVERY == 0 {
                        progress(m.records);
                    }
                    Ok(())
                })?;
                if m.last_seq.is_some() {
                    m.last_hash = Some(last_hash);
                }
            }
            Format::Ocsf => {
                db::for_each_matching(&conn, filter, None, None, |r| {
                    serde_json::to_writer(&mut buf, &ocsf_event(&r))
                        .map_err(|e| Fault::io("", e))?;
                    buf.write_all(b"\n")?;
                    on_record(&mut m, &r);
                    Ok(())
                })?;
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(&mut buf);
                let csv_err = |e: csv::Error| Fault::io("", e);
                w.write_record(CSV_HEADER).map_err(csv_err)?;
                db::for_each_matching(&conn, filter, None, None, |r| {
                    w.write_record(csv_row(&r)).map_err(csv_err)?;
                    on_record(&mut m, &r);
                    Ok(())
                })?;
                w.flush()?;
            }
        }
        buf.flush()?;
    }
    let _ = conn.execute_batch("COMMIT");
    progress(m.records);
    m.bytes = hashing.bytes;
    m.sha256 = hex::encode(hashing.hasher.finalize());
    Ok(m)
}

/// Appends one record as its JSON line (with `\n`) to `out`, from a row in [`db::COLS`] order, and returns its
/// seq. Byte-identical to `serde_json::to_writer(&DecisionRecord)` of the decoded row: the fields are in the same
/// order, strings go through the same escaper, and the JSON columns were written by `serde_json` from the
/// record (context keys sorted at seal), so they are copied as stored after a syntax check. A row that would
/// not decode is refused as [`Fault::Corrupt`], as the decoding path does.
fn jsonl_line(row: &rusqlite::Row<'_>, out: &mut Vec<u8>) -> Result<i64, Fault> {
    use rusqlite::types::ValueRef;
    let seq: i64 = row.get(0)?;
    let bad = |reason: String| Fault::Corrupt { seq, reason };
    let text = |i: usize| -> Result<&str, Fault> {
        row.get_ref(i)?
            .as_str()
            .map_err(|e| bad(format!("column {i}: {e}")))
    };
    let opt_text = |i: usize| -> Result<Option<&str>, Fault> {
        row.get_ref(i)?
            .as_str_or_null()
            .map_err(|e| bad(format!("column {i}: {e}")))
    };
    let json_col = |i: usize, field: &str, open: u8| -> Result<&str, Fault> {
        let s = text(i)?;
        if s.as_bytes().first() != Some(&open) {
            return Err(bad(format!(
                "{field}: not a JSON {}",
                if open == b'{' { "object" } else { "array" }
            )));
        }
        serde_json::from_str::<serde::de::IgnoredAny>(s)
            .map_err(|e| bad(format!("{field}: {e}")))?;
        Ok(s)
    };
    fn string(out: &mut Vec<u8>, s: &str) -> Result<(), Fault> {
        serde_json::to_writer(&mut *out, s).map_err(|e| Fault::io("", e))
    }
    fn opt_string(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), Fault> {
        match s {
            Some(s) => string(out, s),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }
    let kind = text(3)?;
    let kind = RecordKind::parse(kind).ok_or_else(|| bad(format!("unknown kind `{kind}`")))?;
    let decision = match opt_text(9)? {
        None => None,
        Some(d) => Some(Outcome::parse(d).ok_or_else(|| bad(format!("unknown decision `{d}`")))?),
    };
    let latency =
        u64::try_from(row.get::<_, i64>(15)?).map_err(|_| bad("negative latency_us".into()))?;
    let status = match row.get_ref(19)? {
        ValueRef::Null => None,
        v => {
            let s = v.as_i64().map_err(|e| bad(format!("status: {e}")))?;
            Some(u16::try_from(s).map_err(|_| bad(format!("status {s} out of range")))?)
        }
    };
    let break_glass: bool = row.get(20)?;

    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"id\":");
    string(out, text(1)?)?;
    out.extend_from_slice(b",\"time\":");
    string(out, text(2)?)?;
    out.extend_from_slice(b",\"kind\":");
    string(out, kind.as_str())?;
    out.extend_from_slice(b",\"request_id\":");
    opt_string(out, opt_text(4)?)?;
    out.extend_from_slice(b",\"principal\":");
    string(out, text(5)?)?;
    out.extend_from_slice(b",\"action\":");
    string(out, text(6)?)?;
    out.extend_from_slice(b",\"resource\":");
    string(out, text(7)?)?;
    out.extend_from_slice(b",\"context\":");
    out.extend_from_slice(json_col(8, "context", b'{')?.as_bytes());
    out.extend_from_slice(b",\"decision\":");
    opt_string(out, decision.map(Outcome::as_str))?;
    out.extend_from_slice(b",\"policies\":");
    out.extend_from_slice(json_col(10, "policies", b'[')?.as_bytes());
    out.extend_from_slice(b",\"grants_used\":");
    out.extend_from_slice(json_col(11, "grants_used", b'[')?.as_bytes());
    out.extend_from_slice(b",\"errors\":");
    out.extend_from_slice(json_col(12, "errors", b'[')?.as_bytes());
    out.extend_from_slice(b",\"revision\":");
    string(out, text(13)?)?;
    out.extend_from_slice(b",\"engine\":");
    string(out, text(14)?)?;
    out.extend_from_slice(b",\"latency_us\":");
    out.extend_from_slice(latency.to_string().as_bytes());
    out.extend_from_slice(b",\"client_addr\":");
    opt_string(out, opt_text(16)?)?;
    out.extend_from_slice(b",\"method\":");
    opt_string(out, opt_text(17)?)?;
    out.extend_from_slice(b",\"path\":");
    opt_string(out, opt_text(18)?)?;
    out.extend_from_slice(b",\"status\":");
    match status {
        Some(s) => out.extend_from_slice(s.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"break_glass\":");
    out.extend_from_slice(if break_glass { b"true" } else { b"false" });
    out.extend_from_slice(b",\"redacted\":");
    out.extend_from_slice(json_col(21, "redacted", b'[')?.as_bytes());
    out.extend_from_slice(b",\"prev_hash\":");
    string(out, text(22)?)?;
    out.extend_from_slice(b",\"hash\":");
    string(out, text(23)?)?;
    out.extend_from_slice(b"}\n");
    Ok(seq)
}

fn csv_row(r: &DecisionRecord) -> [String; 24] {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    [
        r.seq.to_string(),
        r.id.clone(),
        r.time.clone(),
        r.kind.as_str().to_string(),
        opt(&r.request_id),
        r.principal.clone(),
        r.action.clone(),
        r.resource.clone(),
        r.decision
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
        r.policies.join(";"),
        r.grants_used.join(";"),
        r.errors.join(";"),
        r.revision.clone(),
        r.engine.clone(),
        r.latency_us.to_string(),
        opt(&r.client_addr),
        opt(&r.method),
        opt(&r.path),
        r.status.map(|s| s.to_string()).unwrap_or_default(),
        r.break_glass.to_string(),
        r.redacted.join(";"),
        Value::Object(r.context.clone()).to_string(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ]
}

/// The OCSF schema version the export follows (`metadata.version`). 1.4.0 is the first release in which API
/// Activity takes the `security_control` profile, and so `disposition_id` and `action_id`.
pub const OCSF_VERSION: &str = "1.4.0";

/// The `http_request.http_method` values OCSF 1.4.0 defines (PATCH only arrived in 1.5.0); another method is kept
/// under `unmapped.method`.
const OCSF_HTTP_METHODS: [&str; 8] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "TRACE",
];

/// Maps a record to an OCSF 1.4.0 event of class **API Activity** (`class_uid` 6003, category "Application
/// Activity", `category_uid` 6), with the `security_control` profile (listed in `metadata.profiles`) for the
/// outcome. API Activity fits better than "Authorize Session" (3003), which describes privileges assigned to a login
/// session, whereas each record is the outcome of one API call against a policy. Every event validates against
/// `schemas/ocsf/api_activity-1.4.schema.json`; no attribute is written as null: an absent value leaves it out.
///
/// | OCSF field | from the record |
/// |---|---|
/// | `activity_id` / `activity_name` | HTTP method: POST 1 Create, GET/HEAD 2 Read, PUT/PATCH 3 Update, DELETE 4 Delete, else 99 Other; lifecycle/checkpoint 99 Other |
/// | `type_uid` / `type_name` | `600300 + activity_id` / `API Activity: <activity_name>` |
/// | `time` / `timezone_offset` | `time` as epoch milliseconds / 0 (UTC) |
/// | `disposition_id` / `disposition` | allow 1 Allowed; deny 2 Blocked; error 27 Error; hold 14 Delayed; none 0 Unknown |
/// | `action_id` / `action` | allow 1 Allowed; deny, error 2 Denied; hold, none 0 Unknown (no allow or deny yet) |
/// | `status_id` / `status` | allow 1 Success; deny, error 2 Failure; otherwise 0 Unknown; `status_detail` = `errors` joined with `; ` |
/// | `severity_id` / `severity` | 1 Informational (3 Medium for break-glass); `is_alert` = `break_glass` |
/// | `metadata` | `version` 1.4.0, `profiles` `[security_control]`, `uid` = `id`, `correlation_uid` = `request_id`, `original_time` = `time`, `log_name` decisions, `log_provider` jitgate, `product` `{name: jitgate, vendor_name: jitgate, version}` |
/// | `actor` | `user.uid` = `principal`; no principal: `user.name` anonymous (an unauthenticated request), or `app_name` jitgate (lifecycle, checkpoint) |
/// | `api` | `operation` = `action` (else the method, else the kind); `request.uid` = `request_id`; `response.code` = `status` |
/// | `resources[]` | `[{uid: resource, type: <entity type>}]`, when there is a resource |
/// | `src_endpoint` | `ip` = `client_addr` (port stripped); not an IP: `name` = `client_addr`; none (lifecycle events, checkpoints): `name` jitgate |
/// | `http_request` | `http_method` = `method` (OCSF 1.4.0 values only), `url.path` = `path` |
/// | `http_response` | `code` = `status` |
/// | `unmapped` | `seq`, `kind`, `policies`, `grants_used`, `errors`, `revision`, `engine`, `latency_us`, `break_glass`, `redacted`, `context`, `prev_hash`, `hash`, and `method` when OCSF has no value for it |
pub fn ocsf_event(r: &DecisionRecord) -> Value {
    let method = r
        .method
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(str::to_ascii_uppercase);
    let (activity_id, activity_name) = match (r.kind, method.as_deref()) {
        (RecordKind::Decision, Some("POST")) => (1, "Create"),
        (RecordKind::Decision, Some("GET" | "HEAD")) => (2, "Read"),
        (RecordKind::Decision, Some("PUT" | "PATCH")) => (3, "Update"),
        (RecordKind::Decision, Some("DELETE")) => (4, "Delete"),
        _ => (99, "Other"),
    };
    let (disposition_id, disposition) = match r.decision {
        Some(Outcome::Allow) => (1, "Allowed"),
        Some(Outcome::Deny) => (2, "Blocked"),
        Some(Outcome::Error) => (27, "Error"),
        Some(Outcome::Hold) => (14, "Delayed"),
        None => (0, "Unknown"),
    };
    let (action_id, action) = match r.decision {
        Some(Outcome::Allow) => (1, "Allowed"),
        Some(Outcome::Deny | Outcome::Error) => (2, "Denied"),
        Some(Outcome::Hold) | None => (0, "Unknown"),
    };
    let (status_id, status) = match r.decision {
        Some(Outcome::Allow) => (1, "Success"),
        Some(Outcome::Deny | Outcome::Error) => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    let (severity_id, severity) = if r.break_glass {
        (3, "Medium")
    } else {
        (1, "Informational")
    };
    let time_ms = parse_time(&r.time)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0);
    let nonempty = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let request_id = nonempty(&r.request_id);

    let mut metadata = json!({
        "version": OCSF_VERSION,
        "profiles": ["security_control"],
        "uid": r.id,
        "original_time": r.time,
        "log_name": "decisions",
        "log_provider": "jitgate",
        "product": {"name": "jitgate", "vendor_name": "jitgate", "version": env!("CARGO_PKG_VERSION")},
    });
    if let (Some(m), Some(id)) = (metadata.as_object_mut(), &request_id) {
        m.insert("correlation_uid".into(), json!(id));
    }

    let actor = if !r.principal.is_empty() {
        json!({"user": {"uid": r.principal}})
    } else if r.kind == RecordKind::Decision {
        json!({"user": {"name": "anonymous"}})
    } else {
        json!({"app_name": "jitgate"})
    };

    let operation = if !r.action.is_empty() {
        r.action.clone()
    } else {
        method
            .clone()
            .unwrap_or_else(|| r.kind.as_str().to_string())
    };
    let mut api = serde_json::Map::new();
    api.insert("operation".into(), json!(operation));
    if let Some(id) = &request_id {
        api.insert("request".into(), json!({"uid": id}));
    }
    if let Some(code) = r.status {
        api.insert("response".into(), json!({"code": code}));
    }

    let src_endpoint = match nonempty(&r.client_addr) {
        Some(addr) => match ip_of(&addr) {
            Some(ip) => json!({"ip": ip}),
            None => json!({"name": addr}),
        },
        None => json!({"name": "jitgate"}),
    };

    let mut unmapped = json!({
        "seq": r.seq,
        "kind": r.kind,
        "policies": r.policies,
        "grants_used": r.grants_used,
        "errors": r.errors,
        "revision": r.revision,
        "engine": r.engine,
        "latency_us": r.latency_us,
        "break_glass": r.break_glass,
        "redacted": r.redacted,
        "context": r.context,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    });
    let http_method = method
        .as_deref()
        .filter(|m| OCSF_HTTP_METHODS.contains(m))
        .map(str::to_string);
    if let (Some(u), Some(m), None) = (unmapped.as_object_mut(), &r.method, &http_method) {
        if !m.is_empty() {
            u.insert("method".into(), json!(m));
        }
    }

    let mut ev = json!({
        "class_uid": 6003,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": 600300 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "time": time_ms,
        "timezone_offset": 0,
        "severity_id": severity_id,
        "severity": severity,
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "is_alert": r.break_glass,
        "status_id": status_id,
        "status": status,
        "message": format!("{} {} on {}", r.decision.map_or("none", Outcome::as_str), r.action, r.resource),
        "metadata": metadata,
        "actor": actor,
        "api": api,
        "src_endpoint": src_endpoint,
        "unmapped": unmapped,
    });
    if let Some(obj) = ev.as_object_mut() {
        if !r.errors.is_empty() {
            obj.insert("status_detail".into(), json!(r.errors.join("; ")));
        }
        if !r.resource.is_empty() {
            let mut res = serde_json::Map::new();
            res.insert("uid".into(), json!(r.resource));
            if let Some((ty, _)) = r.resource.split_once("::\"").filter(|(t, _)| !t.is_empty()) {
                res.insert("type".into(), json!(ty));
            }
            obj.insert("resources".into(), json!([res]));
        }
        let path = nonempty(&r.path);
        if http_method.is_some() || path.is_some() {
            let mut req = serde_json::Map::new();
            if let Some(m) = http_method {
                req.insert("http_method".into(), json!(m));
            }
            if let Some(p) = path {
                req.insert("url".into(), json!({"path": p}));
            }
            obj.insert("http_request".into(), Value::Object(req));
        }
        if let Some(code) = r.status {
            obj.insert("http_response".into(), json!({"code": code}));
        }
    }
    ev
}

/// The IP address of `1.2.3.4:5678`, `[::1]:80`, `1.2.3.4` or `::1`; `None` for anything else.
fn ip_of(addr: &str) -> Option<String> {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    addr.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// The manifest path of an export file: `<out>.manifest.json`.
pub fn manifest_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".manifest.json");
    PathBuf::from(p)
}

/// Exports to `out_path` and writes the manifest beside it (`<out>.manifest.json`); both are synced to disk.
pub fn export_to_file(
    path: &Path,
    filter: &Filter,
    format: Format,
    out_path: &Path,
) -> Result<ExportManifest, ExportError> {
    check_export_target(path, out_path, true)?;
    let mut file = File::create(out_path)
        .map_err(|e| Fault::io(format!("cannot create {}", out_path.display()), e))?;
    let manifest = export(path, filter, format, &mut file, &mut |_| {})?;
    file.sync_all()?;
    let mpath = manifest_path(out_path);
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| Fault::io("", e))?;
    text.push(b'\n');
    let mut mf = File::create(&mpath)
        .map_err(|e| Fault::io(format!("cannot create {}", mpath.display()), e))?;
    mf.write_all(&text)?;
    mf.sync_all()?;
    Ok(manifest)
}

/// Refuses an export target that would destroy what it exports or something else: the log file itself or one of
/// its SQLite side files (`-wal`, `-shm`, `-journal`), for the export or its manifest; and, unless `overwrite`, a
/// file that exists.
pub fn check_export_target(log: &Path, out: &Path, overwrite: bool) -> Result<(), ExportError> {
    let canonical = |p: &Path| -> Option<std::path::PathBuf> {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    let Some(log) = canonical(log) else {
        return Ok(());
    };
    let side = |suffix: &str| {
        let mut s = log.clone().into_os_string();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    let protected = [log.clone(), side("-wal"), side("-shm"), side("-journal")];
    for target in [out.to_path_buf(), manifest_path(out)] {
        if canonical(&target).is_some_and(|t| protected.contains(&t)) {
            return Err(ExportError::Invalid {
                what: "export".into(),
                reason: format!(
                    "{} is the decision log {} (or one of its files): an export never writes over its source",
                    target.display(),
                    log.display()
                ),
            });
        }
    }
    if !overwrite {
        for target in [out.to_path_buf(), manifest_path(out)] {
            if target.exists() {
                return Err(ExportError::Invalid {
                    what: "export".into(),
                    reason: format!("{} exists (pass --force to replace it)", target.display()),
                });
            }
        }
    }
    Ok(())
}

/// Checks an export file against its manifest: the SHA-256 and size of its bytes and, for JSON Lines, every
/// record's hash, the links between records with consecutive seqs, the count and the first/last records. A
/// record-level problem is reported in preference to the digest, since it names the record.
pub fn verify_export(file: &Path, manifest: &ExportManifest) -> Result<VerifyReport, ExportError> {
    let f =
        File::open(file).map_err(|e| Fault::io(format!("cannot open {}", file.display()), e))?;
    let mut reader = BufReader::with_capacity(1 << 16, f);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut report = VerifyReport::empty();
    let mut first_failure: Option<(Option<i64>, FailureKind, String)> = None;
    let mut prev: Option<(i64, String)> = None;
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        hasher.update(&line);
        bytes += n as u64;
        line_no += 1;
        if manifest.format != Format::Jsonl || first_failure.is_some() {
            continue;
        }
        let rec: DecisionRecord = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                first_failure = Some((
                    None,
                    FailureKind::Corrupt,
                    format!("line {line_no}: not a decision record: {e}"),
                ));
                continue;
            }
        };
        if let Some((pseq, phash)) = &prev {
            if rec.seq <= *pseq {
                first_failure = Some((
                    Some(rec.seq),
                    FailureKind::BrokenLink,
                    format!("line {line_no}: seq is not increasing"),
                ));
                continue;
            }
            if rec.seq == pseq + 1 && &rec.prev_hash != phash {
                first_failure = Some((
                    Some(rec.seq),
                    FailureKind::BrokenLink,
                    format!("line {line_no}: prev_hash does not match the hash of record {pseq}"),
                ));
                continue;
            }
        }
        if !rec.hash_ok() {
            first_failure = Some((
                Some(rec.seq),
                FailureKind::HashMismatch,
                format!("line {line_no}: content does not match its hash"),
            ));
            continue;
        }
        if report.first_seq.is_none() {
            report.first_seq = Some(rec.seq);
            if manifest.first_hash.as_deref() != Some(rec.hash.as_str()) {
                first_failure = Some((
                    Some(rec.seq),
                    FailureKind::ManifestMismatch,
                    "the first record is not the one the manifest names".into(),
                ));
            }
        }
        report.records += 1;
        report.last_seq = Some(rec.seq);
        report.last_hash = Some(rec.hash.clone());
        prev = Some((rec.seq, rec.hash));
    }
    if let Some((seq, kind, detail)) = first_failure {
        return Ok(report.fail(seq, kind, detail));
    }
    if manifest.format == Format::Jsonl {
        if report.records != manifest.records {
            let detail = format!(
                "{} records in the file, {} in the manifest",
                report.records, manifest.records
            );
            return Ok(report.fail(None, FailureKind::ManifestMismatch, detail));
        }
        if report.last_hash != manifest.last_hash {
            let seq = report.last_seq;
            return Ok(report.fail(
                seq,
                FailureKind::ManifestMismatch,
                "the last record is not the one the manifest names: records were cut off".into(),
            ));
        }
    }
    let digest = hex::encode(hasher.finalize());
    if digest != manifest.sha256 || bytes != manifest.bytes {
        return Ok(report.fail(
            None,
            FailureKind::DigestMismatch,
            format!(
                "SHA-256 of the file is {digest}, the manifest says {}",
                manifest.sha256
            ),
        ));
    }
    if manifest.format != Format::Jsonl {
        // Only the bytes are checked; the digest vouches for the manifest's description of them.
        report.records = manifest.records;
        report.first_seq = manifest.first_seq;
        report.last_seq = manifest.last_seq;
        report.last_hash.clone_from(&manifest.last_hash);
    }
    Ok(report)
}
