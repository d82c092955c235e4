//! The acknowledgement journal: an append-only file of records that are acknowledged before they are committed to
//! SQLite ([`super::LogWriter::append_journaled`]).
//!
//! Why: a caller that waits for its record's SQLite commit waits for a whole batch (its inserts, five index updates
//! and the WAL write), and a proxy answering a request waits with it. A record written to the journal with one
//! `write` is just as safe against a killed process as a committed one (the store runs with `synchronous=NORMAL`,
//! so neither is flushed to the disk platter before the caller goes on), and the writer thread then commits the
//! journaled records in large batches behind the callers' backs.
//!
//! The files: `<log>.journal.<generation>`, one JSON line per record as [`super::DecisionRecord`] serializes it,
//! *before* sealing (`seq` 0, empty hashes; `schemas/journal-line.schema.json`): the chain is still formed by the
//! writer, inside the SQLite transaction that reads the head, so prune and the writer never seal on the same head.
//! Each batch commit also stores, in the `log_journal` row, the generation and the byte offset just past its last
//! journaled record. At start, [`recover`] commits every journaled record after that offset (generations in order),
//! then removes the files; a final line without its newline was never acknowledged and is dropped. A file grows to
//! `LogOptions::journal_rotate_bytes` (8 MiB), then appends go to the next generation and the writer removes the old
//! file once a record of the new one is committed. A lock file keeps a second writer off the same journal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::Fault;
use super::record::DecisionRecord;

/// A journal file is rotated once it would grow past this (the default of `LogOptions::journal_rotate_bytes`).
pub(crate) const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// Records committed per transaction during recovery.
const RECOVERY_BATCH: usize = 1024;

/// Where a journaled record ends: its generation and the offset just past its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct JournalPos {
    pub(crate) generation: u64,
    pub(crate) end: u64,
}

/// `<log>.journal.<generation>`.
pub(crate) fn file_name(log: &Path, generation: u64) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(format!(".journal.{generation}"));
    PathBuf::from(p)
}

fn lock_name(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".journal.lock");
    PathBuf::from(p)
}

/// The journal files next to `log`, oldest generation first.
pub(crate) fn files(log: &Path) -> Result<Vec<(u64, PathBuf)>, Fault> {
    let Some(name) = log.file_name().and_then(|n| n.to_str()) else {
        return Err(Fault::Invalid {
            what: format!("log path {}", log.display()),
            reason: "needs a UTF-8 file name".into(),
        });
    };
    let prefix = format!("{name}.journal.");
    let dir = match log.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Fault::io(format!("cannot list {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(generation) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((generation, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// The stored position: everything before it is committed.
pub(crate) fn stored_pos(conn: &Connection) -> Result<Option<JournalPos>, Fault> {
    Ok(conn
        .prepare_cached("SELECT generation, offset FROM log_journal WHERE id = 1")?
        .query_row([], |r| {
            Ok(JournalPos {
                generation: r.get::<_, i64>(0)?.try_into().unwrap_or(0),
                end: r.get::<_, i64>(1)?.try_into().unwrap_or(0),
            })
        })
        .optional()?)
}

/// Stores `pos` (same transaction as the batch it ends).
pub(crate) fn store_pos(tx: &rusqlite::Connection, pos: JournalPos) -> Result<(), Fault> {
    let generation = i64::try_from(pos.generation).unwrap_or(i64::MAX);
    let end = i64::try_from(pos.end).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO log_journal (id, generation, offset) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET generation = excluded.generation, offset = excluded.offset",
    )?
    .execute(params![generation, end])?;
    Ok(())
}

/// Where the uncommitted part of generation `generation` starts, given the stored position: `None` when the
/// whole file is committed.
fn uncommitted_from(stored: Option<JournalPos>, generation: u64) -> Option<u64> {
    match stored {
        Some(p) if p.generation > generation => None,
        Some(p) if p.generation == generation => Some(p.end),
        _ => Some(0),
    }
}

/// What [`recover`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Journaled records committed now.
    pub(crate) records: u64,
    /// The generation the next journal file gets.
    pub(crate) next_generation: u64,
}

/// Commits every journaled record the store does not have yet (see the module docs), then removes the journal
/// files. A complete line that does not parse fails the start, naming the file and the line: the writer will not
/// run on a journal it cannot read (nothing acknowledged may be lost silently).
pub(crate) fn recover(conn: &mut Connection, log: &Path) -> Result<Recovered, Fault> {
    let found = files(log)?;
    let stored = stored_pos(conn)?;
    let mut out = Recovered {
        records: 0,
        next_generation: stored.map_or(1, |p| p.generation + 1),
    };
    let last_gen = found.last().map(|(g, _)| *g);
    for (generation, path) in &found {
        out.next_generation = out.next_generation.max(generation + 1);
        let Some(skip_to) = uncommitted_from(stored, *generation) else {
            continue;
        };
        let file = File::open(path)
            .map_err(|e| Fault::io(format!("cannot open {}", path.display()), e))?;
        let mut reader = BufReader::new(file);
        let mut offset = 0u64;
        let mut line_no = 0usize;
        let mut batch: Vec<(DecisionRecord, JournalPos)> = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            offset += n as u64;
            if line.last() != Some(&b'\n') {
                // A torn last write: its append never returned, so it was never acknowledged.
                if Some(*generation) == last_gen {
                    tracing::warn!(
                        file = %path.display(),
                        line = line_no,
                        "decision log journal: dropping an incomplete last line"
                    );
                    break;
                }
                return Err(bad_line(path, line_no, "incomplete line before the end"));
            }
            if offset <= skip_to {
                continue;
            }
            let rec: DecisionRecord = serde_json::from_slice(&line)
                .map_err(|e| bad_line(path, line_no, &e.to_string()))?;
            batch.push((
                rec,
                JournalPos {
                    generation: *generation,
                    end: offset,
                },
            ));
            if batch.len() >= RECOVERY_BATCH {
                out.records += commit(conn, &mut batch)?;
            }
        }
        out.records += commit(conn, &mut batch)?;
    }
    for (_, path) in &found {
        std::fs::remove_file(path)
            .map_err(|e| Fault::io(format!("cannot remove {}", path.display()), e))?;
    }
    if out.records > 0 {
        tracing::warn!(
            records = out.records,
            "decision log: committed records acknowledged before the last stop"
        );
    }
    Ok(out)
}

/// How many complete journal lines the store does not have yet: records that were acknowledged and will be
/// committed (by the running writer, or at the next start).
pub(crate) fn pending(conn: &Connection, log: &Path) -> Result<u64, Fault> {
    let found = files(log)?;
    if found.is_empty() {
        return Ok(0);
    }
    let stored = stored_pos(conn)?;
    let mut n = 0u64;
    for (generation, path) in &found {
        let Some(skip_to) = uncommitted_from(stored, *generation) else {
            continue;
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            // Removed by the writer meanwhile: committed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Fault::io(format!("cannot read {}", path.display()), e)),
        };
        let from = usize::try_from(skip_to)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        n += bytes[from..].iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(n)
}

fn bad_line(path: &Path, line: usize, reason: &str) -> Fault {
    Fault::Invalid {
        what: format!("journal {}:{line}", path.display()),
        reason: reason.to_string(),
    }
}

fn commit(
    conn: &mut Connection,
    batch: &mut Vec<(DecisionRecord, JournalPos)>,
) -> Result<u64, Fault> {
    let Some(last) = batch.last().map(|(_, p)| *p) else {
        return Ok(0);
    };
    super::writer::write_records(
        conn,
        batch.iter_mut().map(|(r, _)| r),
        Some(last),
        None,
        None,
    )?;
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}

/// The open journal: appends go to `file`, one line per record.
#[derive(Debug)]
pub(crate) struct Journal {
    log: PathBuf,
    generation: u64,
    file: File,
    len: u64,
    rotate_bytes: u64,
    /// Held for the writer's lifetime (the lock is released when the file closes).
    _lock: File,
    /// Set when a failed write could not be undone: every later append fails (the file's end is unknown).
    broken: bool,
}

impl Journal {
    /// Opens generation `generation` of the journal for `log`, holding `lock` (from [`lock`]) while it is open.
    pub(crate) fn open(
        log: &Path,
        generation: u64,
        rotate_bytes: u64,
        lock: File,
    ) -> Result<Journal, Fault> {
        let file = open_append(&file_name(log, generation))?;
        Ok(Journal {
            log: log.to_path_buf(),
            generation,
            file,
            len: 0,
            rotate_bytes,
            _lock: lock,
            broken: false,
        })
    }

    /// Appends one line (which must end in `\n`) and returns where it ends. A failed write is cut back off, so
    /// the file never holds a partial line followed by more records.
    pub(crate) fn append(&mut self, line: &[u8]) -> Result<JournalPos, Fault> {
        if self.broken {
            return Err(Fault::io(
                "",
                "the decision log journal is unusable after a failed write",
            ));
        }
        if self.len > 0 && self.len + line.len() as u64 > self.rotate_bytes {
            let next = self.generation + 1;
            self.file = open_append(&file_name(&self.log, next))?;
            self.generation = next;
            self.len = 0;
        }
        if let Err(e) = self.file.write_all(line) {
            self.undo(self.len);
            return Err(Fault::io("cannot write the journal", e));
        }
        self.len += line.len() as u64;
        Ok(JournalPos {
            generation: self.generation,
            end: self.len,
        })
    }

    /// Removes the line that ended at `pos` (the last one appended), when it could not be queued.
    pub(crate) fn unappend(&mut self, pos: JournalPos, line_len: u64) {
        if pos.generation == self.generation && pos.end == self.len {
            self.undo(self.len - line_len);
        }
    }

    fn undo(&mut self, len: u64) {
        match self.file.set_len(len) {
            Ok(()) => self.len = len,
            Err(e) => {
                tracing::error!(error = %e, "decision log journal: cannot cut off a failed write");
                self.broken = true;
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File, Fault> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Fault::io(format!("cannot open {}", path.display()), e))
}

/// Takes the journal lock of `log`: `Ok(None)` when another writer holds it (that writer owns the journal: do not
/// recover it, do not journal).
pub(crate) fn lock(log: &Path) -> Result<Option<File>, Fault> {
    let lock_path = lock_name(log);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Fault::io(format!("cannot open {}", lock_path.display()), e))?;
    // flock: released when the file closes, so a killed writer never leaves a stale lock behind.
    match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(lock)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(Fault::io(format!("cannot lock {}", lock_path.display()), e)),
    }
}

/// The error for a journal whose lock another writer holds.
pub(crate) fn locked(log: &Path) -> Fault {
    Fault::io(
        "",
        format!(
            "{} is locked: another writer is journaling this decision log",
            lock_name(log).display()
        ),
    )
}

/// Removes the journal files older than `generation` (every record in them is committed).
pub(crate) fn remove_before(log: &Path, oldest: &mut u64, generation: u64) {
    while *oldest < generation {
        let path = file_name(log, *oldest);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "decision log journal: cannot remove a committed file"
                );
                return;
            }
        }
        *oldest += 1;
    }
}
