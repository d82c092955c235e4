//! Shared by the CLI tests: the repository root, the built `jitgate` binary run from it, and a real `jitgate serve`
//! started from a config file. Each test binary uses only some of these, hence the `dead_code` allowances.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root (the workspace, above `tools/`).
#[allow(dead_code)]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the built `jitgate` with `args` in the repository root and returns what it printed and its status.
#[allow(dead_code)]
pub fn jitgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// A running `jitgate serve`, killed and waited for when dropped.
#[allow(dead_code)]
pub struct Served {
    /// The process.
    pub child: Child,
    /// The admin listener, `http://127.0.0.1:PORT`.
    pub admin: String,
    /// The data-plane listener, `http://127.0.0.1:PORT`.
    pub proxy: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `jitgate serve --config path` and waits (60 s at most) for its `jitgate listening` line; `Err` with what
/// it printed when it exits first.
#[allow(dead_code)]
pub fn serve(path: &Path) -> Result<Served, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(["serve", "--config"])
        .arg(path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let status = child.wait().unwrap();
            return Err(format!("exited ({status}):\n{}", seen.join("\n")));
        };
        if line.contains("jitgate listening") {
            // `addr=127.0.0.1:PORT admin=Some(127.0.0.1:PORT)`
            let after = |key: &str| {
                line.split(key)
                    .nth(1)
                    .and_then(|s| s.split([' ', ')']).next())
                    .unwrap()
                    .to_string()
            };
            let proxy = format!("http://{}", after("addr="));
            let admin = format!("http://{}", after("admin=Some("));
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Ok(Served {
                child,
                admin,
                proxy,
            });
        }
        seen.push(line);
    }
}

/// Copies the directory `src` (a bundle, say) into `dst`, recursively.
#[allow(dead_code)]
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}
