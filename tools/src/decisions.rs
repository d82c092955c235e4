//! `jitgate decisions ...`: the compliance side of the decision log — tail, query, export (JSON Lines, CSV, OCSF)
//! with a manifest, verify the hash chain of the store or of an export, and prune with a checkpoint.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use jitgate_engine::log::{self, Cursor, DecisionRecord, Filter, Format, Outcome, RecordKind};
use jitgate_engine::postgres::decisions::{Records, ReplicaCursor, ReplicaReport};
use jitgate_engine::postgres::redact_url;
use time::OffsetDateTime;

/// The decision-log subcommands.
#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// Show the newest records.
    Tail(TailArgs),
    /// Query records with filters (JSON Lines on stdout).
    Query(QueryArgs),
    /// Export records to a file with a manifest next to it (`<out>.manifest.json`).
    Export(ExportArgs),
    /// Verify the hash chain of the store against its signed anchors, or an export against its manifest (exit 0
    /// intact, 1 not, 2 could not check).
    Verify(VerifyArgs),
    /// Print the latest signed anchor (one JSON line), for publishing elsewhere.
    Anchor(AnchorArgs),
    /// Remove records older than a date, leaving a checkpoint so that the rest still verifies.
    Prune(PruneArgs),
}

/// Where the log is.
#[derive(Debug, Args)]
pub struct LogArg {
    /// The decision-log SQLite file.
    #[arg(long, default_value = ".jitgate/decisions.db")]
    pub log: PathBuf,
}

/// Where shipped records are: a PostgreSQL store shared by replicas.
#[derive(Debug, Args, Default)]
pub struct StoreArg {
    /// Read the decision records every replica shipped to this PostgreSQL store (its `[store] url`) instead of a
    /// local log.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// With `--store`: only the records of this replica (its `[cluster] replica`).
    #[arg(long, requires = "store")]
    pub replica: Option<String>,
}

/// Filters shared by query and export.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// From this time: RFC 3339, or a duration ago like `24h`.
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time (exclusive): RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Principal entity ref, e.g. `User::"alice"`.
    #[arg(long)]
    pub principal: Option<String>,
    /// Action id.
    #[arg(long)]
    pub action: Option<String>,
    /// Resource entity ref.
    #[arg(long)]
    pub resource: Option<String>,
    /// allow, deny, hold or error.
    #[arg(long)]
    pub decision: Option<String>,
    /// Records that used this grant.
    #[arg(long)]
    pub grant: Option<String>,
    /// Bundle revision.
    #[arg(long)]
    pub revision: Option<String>,
    /// Request id.
    #[arg(long)]
    pub request_id: Option<String>,
    /// decision, lifecycle or checkpoint.
    #[arg(long)]
    pub kind: Option<String>,
}

/// `decisions tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    log: LogArg,
    /// How many records.
    #[arg(short = 'n', long, default_value_t = 20)]
    count: u32,
    /// Print full records as JSON Lines.
    #[arg(long)]
    json: bool,
    /// Keep printing records as they are committed, until interrupted (Ctrl-C).
    #[arg(short = 'f', long)]
    follow: bool,
    /// How often `--follow` looks for new records.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
}

/// `decisions query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    log: LogArg,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// Most records.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue after this seq (the cursor printed by the previous page; with `--store`, `REPLICA:SEQ`).
    #[arg(long)]
    after: Option<String>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One JSON record per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
    /// OCSF 1.x events, one per line.
    Ocsf,
}

/// `decisions export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    log: LogArg,
    /// With `--store`, the records of one replica (`--replica`, needed when several shipped records): an export is
    /// one chain.
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    filter: FilterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    format: ExportFormat,
    /// Output file. Its manifest is written beside it (`<file>.manifest.json`); both appear only once the export is
    /// complete.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output file and manifest.
    #[arg(long)]
    force: bool,
}

/// `decisions verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    log: LogArg,
    /// With `--store`, the chain of every replica that shipped records (or of `--replica`), each on its own.
    #[command(flatten)]
    store: StoreArg,
    /// Verify this export (with its `<file>.manifest.json`) instead of the store.
    #[arg(long)]
    export: Option<PathBuf>,
    /// The public key the anchors must be signed with (SPKI PEM, `<anchor_key>.pub`). Default: `anchor.key.pub`
    /// beside the log when it is there; an auditor passes a copy kept apart from the log. With `--store`: each
    /// replica's chain is checked against the signed anchors it shipped.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The signed anchors (an anchors file, or a JSON Lines sink copy). Default: `<log>.anchors.jsonl`.
    #[arg(long)]
    anchors: Option<PathBuf>,
}

/// `decisions anchor`.
#[derive(Debug, Args)]
pub struct AnchorArgs {
    #[command(flatten)]
    log: LogArg,
    /// The anchors file. Default: `<log>.anchors.jsonl`.
    #[arg(long)]
    anchors: Option<PathBuf>,
    /// Check the anchor's signature with this public key first (exit 1 if it does not verify).
    #[arg(long)]
    public_key: Option<PathBuf>,
}

/// `decisions prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    log: LogArg,
    /// Remove records before this time (RFC 3339, or a duration ago like `90d`).
    #[arg(long)]
    before: String,
    /// The anchor signing key (`[log] anchor_key`), to sign the head once pruned. Needed when the log is anchored;
    /// default: `anchor.key` beside the log when it is there.
    #[arg(long)]
    anchor_key: Option<PathBuf>,
    /// Also prune records the replica's shipper has not copied into the shared store yet (they are then lost from
    /// the store for good), and drop the log's shipping mark. For a log that is no longer shipped; without it,
    /// prune stops at the newest shipped seq.
    #[arg(long)]
    discard_unshipped: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// A prune outcome in words: how many records went, up to which seq, and the checkpoint left.
fn describe_prune(r: &log::PruneReport) -> String {
    let kept = match r.shipped_through {
        Some(seq) if r.kept_unshipped > 0 => format!(
            "; kept {} older records that the shipper has not copied into the store yet (shipped through seq \
             {seq}): prune again once they are shipped",
            r.kept_unshipped
        ),
        _ => String::new(),
    };
    if r.deleted == 0 {
        if !kept.is_empty() {
            return format!("nothing pruned{kept}");
        }
        return "nothing to prune: no record is older than --before".into();
    }
    let mut out = format!("pruned {} records", r.deleted);
    if let Some(seq) = r.pruned_through {
        out.push_str(&format!(" (through seq {seq})"));
    }
    if let Some(seq) = r.checkpoint_seq {
        out.push_str(&format!("; checkpoint at seq {seq}"));
    }
    out.push_str(": the rest still verifies (jitgate decisions verify)");
    out.push_str(&kept);
    out
}

/// Runs a decisions subcommand.
pub fn run(cmd: DecisionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DecisionsCommand::Tail(a) => tail(a),
        DecisionsCommand::Query(a) => query(a),
        DecisionsCommand::Export(a) => export(a),
        DecisionsCommand::Verify(a) => verify(a),
        DecisionsCommand::Anchor(a) => anchor(a),
        DecisionsCommand::Prune(a) => prune(a),
    }
}

/// An RFC 3339 time, or a duration before now (`24h`, `7d`).
pub(crate) fn parse_when(s: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = log::parse_time(s) {
        return Ok(t);
    }
    let d = humantime::parse_duration(s)
        .with_context(|| format!("`{s}` is neither an RFC 3339 time nor a duration"))?;
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| OffsetDateTime::now_utc().checked_sub(d))
        .with_context(|| format!("`{s}` reaches back before any date jitgate can name"))
}

fn filter_of(f: &FilterArgs) -> anyhow::Result<Filter> {
    let since = f.since.as_deref().map(parse_when).transpose()?;
    let until = f.until.as_deref().map(parse_when).transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        anyhow::ensure!(
            s < u,
            "--since {} is not before --until {}: the range holds no time",
            f.since.as_deref().unwrap_or_default(),
            f.until.as_deref().unwrap_or_default()
        );
    }
    Ok(Filter {
        since,
        until,
        principal: f.principal.clone(),
        action: f.action.clone(),
        resource: f.resource.clone(),
        decision: f
            .decision
            .as_deref()
            .map(|d| {
                Outcome::parse(d).with_context(|| {
                    format!("--decision `{d}`: expected allow, deny, hold or error")
                })
            })
            .transpose()?,
        grant: f.grant.clone(),
        revision: f.revision.clone(),
        request_id: f.request_id.clone(),
        kind: f
            .kind
            .as_deref()
            .map(|k| {
                RecordKind::parse(k).with_context(|| {
                    format!("--kind `{k}`: expected decision, lifecycle or checkpoint")
                })
            })
            .transpose()?,
    })
}

fn require_log(path: &std::path::Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!("no decision log at {} (pass --log FILE)", path.display());
    }
    Ok(())
}

fn line(r: &DecisionRecord) -> String {
    // A lifecycle record says what happened (`created`, `approved`, `revoked`...), not an effect; the grant it
    // concerns, or the grants a decision used, are named.
    let what = match r.kind {
        RecordKind::Decision => r.decision.map(|d| d.as_str()).unwrap_or(r.kind.as_str()),
        _ => r
            .action
            .strip_prefix("lifecycle.")
            .unwrap_or(r.kind.as_str()),
    };
    format!(
        "{seq:>6} {time} {what:<9} {status:>3} {principal} {action} {resource}{grants} {policies}{bg}",
        seq = r.seq,
        time = r.time,
        status = r
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        principal = if r.principal.is_empty() {
            "-"
        } else {
            &r.principal
        },
        action = if r.action.is_empty() { "-" } else { &r.action },
        resource = if r.resource.is_empty() {
            "-"
        } else {
            &r.resource
        },
        grants = if r.grants_used.is_empty() {
            String::new()
        } else {
            format!(" grant={}", r.grants_used.join(","))
        },
        policies = if r.policies.is_empty() {
            String::new()
        } else {
            format!("[{}]", r.policies.join(","))
        },
        bg = if r.break_glass { " BREAK-GLASS" } else { "" },
    )
    .trim_end()
    .to_string()
}

fn tail(a: TailArgs) -> anyhow::Result<ExitCode> {
    require_log(&a.log.log)?;
    let mut out = std::io::stdout().lock();
    let recs = log::tail(&a.log.log, a.count)?;
    if !print_records(&mut out, &recs, a.json)? || !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow from the newest record (shown above, unless `-n 0`); from the start when the log is empty.
    let mut after = match recs.last() {
        Some(r) => r.seq,
        None => log::tail(&a.log.log, 1)?.last().map_or(0, |r| r.seq),
    };
    loop {
        let page = log::query(&a.log.log, &Filter::default(), Some(Cursor(after)), 1000)?;
        if !print_records(&mut out, &page.records, a.json)? {
            return Ok(ExitCode::SUCCESS);
        }
        after = page.records.last().map_or(after, |r| r.seq);
        // A full page means more are waiting: read on at once.
        if page.next.is_none() {
            std::thread::sleep(a.interval);
        }
    }
}

/// Prints records (one line each, or JSON Lines) and flushes; `false` once the reader has gone (a closed pipe, as
/// with `| head`), which ends the command quietly.
fn print_records(
    out: &mut impl std::io::Write,
    recs: &[DecisionRecord],
    json: bool,
) -> anyhow::Result<bool> {
    let written = recs
        .iter()
        .try_for_each(|r| {
            if json {
                let text = serde_json::to_string(r).map_err(std::io::Error::other)?;
                writeln!(out, "{text}")
            } else {
                writeln!(out, "{}", line(r))
            }
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

fn query(a: QueryArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &a.store.store {
        return query_store(&a, url);
    }
    require_log(&a.log.log)?;
    let after = a
        .after
        .as_deref()
        .map(|s| {
            s.parse::<i64>()
                .with_context(|| format!("--after `{s}`: expected a seq (a whole number)"))
        })
        .transpose()?;
    let page = log::query(
        &a.log.log,
        &filter_of(&a.filter)?,
        after.map(Cursor),
        a.limit,
    )?;
    for r in &page.records {
        outln!("{}", serde_json::to_string(r)?);
    }
    if let Some(Cursor(next)) = page.next {
        eprintln!("more records: --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The shipped records of the store at `url`.
fn open_store(url: &str) -> anyhow::Result<Records> {
    Records::open(url).map_err(|e| {
        let msg = format!("--store {}: {e}", redact_url(url));
        // A server that cannot be reached exits 3, as an unreachable admin API does; a bad URL or schema, 2.
        if msg.contains("cannot connect to") {
            anyhow::Error::new(crate::exit::Unreachable(msg))
        } else {
            anyhow::anyhow!(msg)
        }
    })
}

/// A record as JSON with the replica that wrote it in front (`{"replica": ..., "seq": ...}`).
fn with_replica(replica: &str, r: &DecisionRecord) -> anyhow::Result<String> {
    let mut m = serde_json::Map::new();
    m.insert("replica".into(), serde_json::Value::String(replica.into()));
    if let serde_json::Value::Object(rec) = serde_json::to_value(r)? {
        m.extend(rec);
    }
    Ok(serde_json::to_string(&m)?)
}

fn query_store(a: &QueryArgs, url: &str) -> anyhow::Result<ExitCode> {
    let records = open_store(url)?;
    let after = match a.after.as_deref() {
        None => None,
        Some(s) => {
            let (replica, seq) = match (s.rsplit_once(':'), &a.store.replica) {
                (Some((r, seq)), _) => (r.to_string(), seq),
                (None, Some(r)) => (r.clone(), s),
                (None, None) => bail!(
                    "--after `{s}`: with --store, the cursor is REPLICA:SEQ (as printed by the previous page)"
                ),
            };
            let seq = seq
                .parse::<i64>()
                .with_context(|| format!("--after `{s}`: `{seq}` is not a seq"))?;
            Some(ReplicaCursor { replica, seq })
        }
    };
    let page = records.query(
        a.store.replica.as_deref(),
        &filter_of(&a.filter)?,
        after.as_ref(),
        a.limit,
    )?;
    for (replica, r) in &page.records {
        outln!("{}", with_replica(replica, r)?);
    }
    if let Some(next) = page.next {
        eprintln!("more records: --after {}:{}", next.replica, next.seq);
    }
    Ok(ExitCode::SUCCESS)
}

/// The one replica an export from the store covers: `--replica`, or the only one that shipped records.
fn export_replica(records: &Records, asked: Option<&str>) -> anyhow::Result<String> {
    let replicas = records.replicas()?;
    match asked {
        Some(r) if replicas.iter().any(|x| x == r) => Ok(r.to_string()),
        Some(r) => bail!(
            "replica `{r}` shipped no records to {} (replicas there: {})",
            records.url(),
            list_or_none(&replicas)
        ),
        None => match replicas.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("no replica shipped records to {}", records.url()),
            many => bail!(
                "{} replicas shipped records ({}): an export is one replica's chain, pass --replica NAME",
                many.len(),
                many.join(", ")
            ),
        },
    }
}

fn list_or_none(l: &[String]) -> String {
    if l.is_empty() {
        "none".into()
    } else {
        l.join(", ")
    }
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    if a.store.store.is_none() {
        require_log(&a.log.log)?;
    }
    let format = match a.format {
        ExportFormat::Jsonl => Format::Jsonl,
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Ocsf => Format::Ocsf,
    };
    let filter = filter_of(&a.filter)?;
    log::check_export_target(&a.log.log, &a.out, a.force)?;
    // Written under temporary names beside the targets and renamed once complete: a failed export leaves no
    // half-written file, and never a file without its manifest.
    let part = |p: &std::path::Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".partial");
        PathBuf::from(s)
    };
    let mpath = log::manifest_path(&a.out);
    let (out_part, manifest_part) = (part(&a.out), part(&mpath));
    let written = write_export(&a, &filter, format, &out_part, &manifest_part).and_then(|m| {
        std::fs::rename(&out_part, &a.out).with_context(|| {
            format!(
                "cannot rename {} to {}",
                out_part.display(),
                a.out.display()
            )
        })?;
        std::fs::rename(&manifest_part, &mpath).with_context(|| {
            format!(
                "cannot rename {} to {}",
                manifest_part.display(),
                mpath.display()
            )
        })?;
        Ok(m)
    });
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&out_part);
            let _ = std::fs::remove_file(&manifest_part);
            return Err(e);
        }
    };
    outln!(
        "exported {} records to {} (manifest {})",
        manifest.records,
        a.out.display(),
        mpath.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes the export to `out` and its manifest to `manifest`, synced to disk.
fn write_export(
    a: &ExportArgs,
    filter: &log::Filter,
    format: Format,
    out: &std::path::Path,
    manifest_to: &std::path::Path,
) -> anyhow::Result<log::ExportManifest> {
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let syncer = file
        .try_clone()
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    // On a terminal, a progress bar against the records that match now (the export's snapshot may hold a few
    // more, committed in between: the bar then stops at 100%).
    let store = a.store.store.as_deref().map(open_store).transpose()?;
    let replica = match &store {
        Some(records) => Some(export_replica(records, a.store.replica.as_deref())?),
        None => None,
    };
    let total = if std::io::stderr().is_terminal() {
        Some(match (&store, &replica) {
            (Some(records), Some(r)) => records.count(Some(r.as_str()), filter)?,
            _ => log::count(&a.log.log, filter)?,
        })
    } else {
        None
    };
    let started = std::time::Instant::now();
    let mut progress = |n| {
        if let Some(total) = total {
            eprint!("\r{}\x1b[K", progress_bar(n, total, started.elapsed()));
        }
    };
    // The disk writes overlap the export (see `syncing_behind`) instead of all waiting for the final sync.
    let manifest = log::syncing_behind(&syncer, || match (&store, &replica) {
        (Some(records), Some(r)) => records
            .export(r, filter, format, &mut writer, &mut progress)
            .map_err(anyhow::Error::from),
        _ => log::export(&a.log.log, filter, format, &mut writer, &mut progress)
            .map_err(anyhow::Error::from),
    })?;
    use std::io::Write as _;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?
        .sync_all()?;
    if total.is_some() {
        eprintln!();
    }
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    std::fs::write(manifest_to, text)
        .with_context(|| format!("cannot write {}", manifest_to.display()))?;
    Ok(manifest)
}

/// One line of the export's progress bar: `[######----]  60%  1,200 / 2,000 records  1.5 s  ETA 1.0 s`.
fn progress_bar(done: u64, total: u64, elapsed: std::time::Duration) -> String {
    const WIDTH: u64 = 30;
    let shown = done.min(total);
    let filled = (shown * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (shown * 100).checked_div(total).unwrap_or(100);
    let secs = elapsed.as_secs_f64();
    let eta = if done == 0 || shown >= total {
        String::new()
    } else {
        format!("  ETA {:.1} s", secs * (total - shown) as f64 / done as f64)
    };
    format!(
        "[{}{}] {percent:>3}%  {} / {} records  {secs:.1} s{eta}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        thousands(done),
        thousands(total.max(done)),
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A file beside the log (`anchor.key`, `anchor.key.pub`), when it is there.
fn beside_log(log: &std::path::Path, name: &str) -> Option<PathBuf> {
    let dir = log
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    Some(dir.join(name)).filter(|p| p.is_file())
}

/// `; N signed anchors, signed through seq S` when a report checked anchors.
fn anchored(r: &log::VerifyReport) -> String {
    if r.anchors == 0 {
        return String::new();
    }
    format!(
        "; {} signed anchors verified{}",
        r.anchors,
        r.anchored_seq
            .map_or_else(String::new, |s| format!(", signed through seq {s}"))
    )
}

/// `decisions verify --store`: every replica's shipped chain on its own.
fn verify_store(a: &VerifyArgs, url: &str) -> anyhow::Result<ExitCode> {
    if a.export.is_some() || a.anchors.is_some() {
        bail!(
            "--store verifies the shipped chains (against the shipped signed anchors with --public-key); --export \
             and --anchors check a file or a local log"
        );
    }
    let key = a
        .public_key
        .as_deref()
        .map(log::load_public_key)
        .transpose()?;
    let records = open_store(url)?;
    if let Some(r) = &a.store.replica {
        let replicas = records.replicas()?;
        if !replicas.iter().any(|x| x == r) {
            bail!(
                "replica `{r}` shipped no records to {} (replicas there: {})",
                records.url(),
                list_or_none(&replicas)
            );
        }
    }
    let reports = records.verify_with(a.store.replica.as_deref(), key.as_ref(), &mut |_| {})?;
    if reports.is_empty() {
        outln!("intact: no replica shipped records to {}", records.url());
        return Ok(ExitCode::SUCCESS);
    }
    let mut bad = 0;
    let mut total = 0;
    for ReplicaReport { replica, report } in &reports {
        total += report.records;
        match (&report.failure, report.first_seq, report.last_seq) {
            (Some(f), ..) => {
                bad += 1;
                outln!("replica {replica}: NOT intact: {f}");
            }
            (None, Some(first), Some(last)) => outln!(
                "replica {replica}: intact: {} records verified (seq {first}..{last}){}",
                report.records,
                anchored(report)
            ),
            (None, ..) => outln!("replica {replica}: intact: no records"),
        }
    }
    if bad > 0 {
        outln!("NOT intact: {bad} of {} replicas", reports.len());
        return Ok(ExitCode::from(1));
    }
    if key.is_none() {
        outln!(
            "note: without --public-key only each chain is checked, which proves nothing against someone who can \
             rewrite the store, nor which replica a chain belongs to (replicas with `[log] anchor_key` ship signed \
             anchors: pass the key's .pub)"
        );
    }
    outln!(
        "intact: {} replicas, {total} records verified",
        reports.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = &a.store.store {
        return verify_store(&a, url);
    }
    // Records acknowledged from the journal (`[log] acknowledge = "journal"`) that the store does not hold yet.
    let mut pending = 0;
    // An export is checked against the key it is given; the store also against the one beside it.
    let key_path = a.public_key.clone().or_else(|| {
        a.export
            .is_none()
            .then(|| beside_log(&a.log.log, "anchor.key.pub"))
            .flatten()
    });
    let key = key_path.as_deref().map(log::load_public_key).transpose()?;
    let mut unanchored = false;
    let report = match &a.export {
        Some(file) => {
            let mpath = log::manifest_path(file);
            let manifest = serde_json::from_slice(
                &std::fs::read(&mpath)
                    .with_context(|| format!("cannot read {}", mpath.display()))?,
            )
            .with_context(|| format!("{}: not an export manifest", mpath.display()))?;
            log::verify_export_with(file, &manifest, key.as_ref())?
        }
        None => {
            let anchors = a
                .anchors
                .clone()
                .unwrap_or_else(|| log::anchors_path(&a.log.log));
            if key.is_none() {
                require_log(&a.log.log)?;
                if anchors.exists() {
                    bail!(
                        "{} holds signed anchors: pass --public-key FILE (the `[log] anchor_key` file's `.pub`) to \
                         check the log against them",
                        anchors.display()
                    );
                }
                unanchored = true;
            }
            let opts = log::VerifyOptions {
                public_key: key,
                anchors: Some(anchors),
            };
            let total = if std::io::stderr().is_terminal() && a.log.log.is_file() {
                log::count(&a.log.log, &Filter::default()).ok()
            } else {
                None
            };
            let started = std::time::Instant::now();
            let report = log::verify_log(&a.log.log, &opts, &mut |n| {
                if let Some(total) = total {
                    eprint!("\r{}\x1b[K", progress_bar(n, total, started.elapsed()));
                }
            })?;
            if total.is_some() {
                eprintln!();
            }
            if a.log.log.is_file() {
                pending = log::journal_pending(&a.log.log).unwrap_or(0);
            }
            report
        }
    };
    let note = || {
        if pending > 0 {
            outln!(
                "note: {pending} acknowledged records are in the journal and not yet in the store (a running \
                 proxy commits them within milliseconds; after a crash, the next start does)"
            );
        }
    };
    match &report.failure {
        None => {
            match (report.first_seq, report.last_seq) {
                (Some(first), Some(last)) => outln!(
                    "intact: {} records verified (seq {first}..{last})",
                    report.records
                ),
                _ => outln!("intact: {} records verified (empty log)", report.records),
            }
            if report.anchors > 0 {
                outln!(
                    "{} signed anchors verified with key {}{}",
                    report.anchors,
                    key_path
                        .as_deref()
                        .map_or_else(String::new, |p| p.display().to_string()),
                    report
                        .anchored_seq
                        .map_or_else(String::new, |s| format!("; signed through seq {s}"))
                );
            }
            if unanchored {
                outln!(
                    "warning: no signed anchors: the chain alone does not prove the log against someone who can \
                     rewrite the file (set `[log] anchor_key`)"
                );
            }
            note();
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            outln!("NOT intact: {f}");
            note();
            Ok(ExitCode::from(1))
        }
    }
}

fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    require_log(&a.log.log)?;
    let before = parse_when(&a.before)?;
    anyhow::ensure!(
        before <= OffsetDateTime::now_utc(),
        "--before {} is in the future: it would prune records not yet written",
        a.before
    );
    let anchors = log::anchors_path(&a.log.log);
    let key = a
        .anchor_key
        .clone()
        .or_else(|| beside_log(&a.log.log, "anchor.key"));
    let anchor = match key {
        Some(key) => {
            let last = if anchors.exists() {
                log::latest_anchor(&anchors)?
            } else {
                None
            };
            Some(log::AnchorOptions {
                key: std::sync::Arc::new(log::AnchorKey::load(&key)?),
                file: anchors,
                replica: last
                    .as_ref()
                    .map_or_else(|| "cli".into(), |l| l.replica.clone()),
                every: std::time::Duration::from_secs(60),
                every_records: last.as_ref().map_or(10_000, |l| l.every_records),
            })
        }
        None if anchors.exists() => bail!(
            "the log is anchored ({}): pass --anchor-key FILE (`[log] anchor_key`) so that the pruned head is signed",
            anchors.display()
        ),
        None => None,
    };
    let opts = log::PruneOptions {
        actor: actor(),
        anchor,
        discard_unshipped: a.discard_unshipped,
    };
    let r = log::prune_with(&a.log.log, before, &opts)?;
    if a.discard_unshipped {
        log::unmark_shipped(&a.log.log)?;
    }
    if a.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!("{}", describe_prune(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// Who runs the CLI, for prune checkpoints: `user@host`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{user}@{host}")
}

fn anchor(a: AnchorArgs) -> anyhow::Result<ExitCode> {
    let file = a
        .anchors
        .clone()
        .unwrap_or_else(|| log::anchors_path(&a.log.log));
    let Some(latest) = log::latest_anchor(&file)? else {
        outln!("no signed anchor in {}", file.display());
        return Ok(ExitCode::from(1));
    };
    if let Some(k) = &a.public_key {
        let key = log::load_public_key(k)?;
        if !latest.signature_ok(&key) {
            outln!(
                "NOT signed by {}: the latest anchor in {} (key {}) does not verify",
                k.display(),
                file.display(),
                latest.key_id
            );
            return Ok(ExitCode::from(1));
        }
    }
    outln!("{}", serde_json::to_string(&latest)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn progress_bar_fills_with_the_share_done_and_estimates_the_rest() {
        assert_eq!(
            progress_bar(400_000, 1_000_000, Duration::from_secs(2)),
            "[############------------------]  40%  400,000 / 1,000,000 records  2.0 s  ETA 3.0 s"
        );
        assert_eq!(
            progress_bar(0, 8_192, Duration::ZERO),
            "[------------------------------]   0%  0 / 8,192 records  0.0 s"
        );
        // Records committed after the count: full, no estimate, and the larger number as the total.
        assert_eq!(
            progress_bar(1_005, 1_000, Duration::from_millis(1500)),
            "[##############################] 100%  1,005 / 1,005 records  1.5 s"
        );
        assert_eq!(
            progress_bar(0, 0, Duration::ZERO),
            "[##############################] 100%  0 / 0 records  0.0 s"
        );
    }

    #[test]
    fn thousands_are_grouped_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(123_456_789), "123,456,789");
    }
}
