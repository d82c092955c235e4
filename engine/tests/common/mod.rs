//! Helpers shared by the engine's integration tests: copies of the shipped bundles to edit in a temporary folder, and
//! decision records for the log writer's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};

/// 12:13 UTC on a weekday, inside the quickstart's business hours.
pub const NOW: i64 = 1_699_964_000;

/// Copies the folder `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// The shipped bundle folder `policies/<name>`.
pub fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// An allowing decision record numbered `i` (five principals, one grant of seven, a resource of its own), for tests
/// of the log writer.
pub fn record(i: usize) -> jitgate_engine::log::DecisionRecord {
    use jitgate_engine::log::{DecisionRecord, Outcome, RecordKind};
    let mut r = DecisionRecord::new(RecordKind::Decision);
    r.principal = format!(r#"User::"u{}""#, i % 5);
    r.action = r#"Action::"GET""#.into();
    r.resource = format!(r#"Service::"s{i}""#);
    r.decision = Some(Outcome::Allow);
    r.grants_used = vec![format!("g{}", i % 7)];
    r.revision = "rev1".into();
    r.engine = "cedar".into();
    r
}
