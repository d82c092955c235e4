//! What every section's validation shares: the problems found so far (each as its key path and message), and how
//! relative paths, durations and timeouts read. A leaf of the config module.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The problems found so far, and the directory relative paths are resolved against.
#[derive(Debug)]
pub(crate) struct Problems<'a> {
    base: &'a Path,
    /// Every problem: its key path, and its message (which starts with the key path).
    pub(crate) errs: Vec<(String, String)>,
}

impl<'a> Problems<'a> {
    /// No problems yet; relative paths resolve against `base`.
    pub(crate) fn new(base: &'a Path) -> Self {
        Problems {
            base,
            errs: Vec::new(),
        }
    }

    /// Records a problem with `key`.
    pub(crate) fn err(&mut self, key: &str, msg: String) {
        self.errs.push((key.to_string(), format!("{key}: {msg}")));
    }

    /// `p` against the config file's directory, unless it is absolute.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `p` resolved as [`Problems::resolve`] does, and a problem with `key` when no file is there.
    pub(crate) fn existing_file(&mut self, key: &str, p: &Path) -> PathBuf {
        let f = self.resolve(p);
        if !f.is_file() {
            self.err(key, format!("`{}` does not exist", f.display()));
        }
        f
    }

    /// A duration (`30s`, `1h`); zero, and a problem, when it does not read as one.
    pub(crate) fn duration(&mut self, key: &str, v: &str) -> Duration {
        match humantime::parse_duration(v) {
            Ok(d) => d,
            Err(e) => {
                self.err(key, format!("`{v}` is not a duration: {e}"));
                Duration::ZERO
            }
        }
    }

    /// A timeout: a duration longer than 0s. A timeout of 0s would end every request (or connection) at once: it
    /// is refused rather than read as "off".
    pub(crate) fn timeout(&mut self, key: &str, v: &str) -> Duration {
        let d = self.duration(key, v);
        if d.is_zero() && humantime::parse_duration(v).is_ok() {
            self.err(
                key,
                format!("`{v}` must be longer than 0s (a zero timeout would fail every request)"),
            );
        }
        d
    }

    /// A duration of at least a second, or `None` (and a problem).
    pub(crate) fn at_least_1s(&mut self, key: &str, v: &str) -> Option<Duration> {
        match humantime::parse_duration(v) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                self.err(key, format!("`{v}` must be at least 1s"));
                None
            }
            Err(e) => {
                self.err(key, format!("`{v}` is not a duration: {e}"));
                None
            }
        }
    }
}
