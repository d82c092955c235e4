//! Shared by the CLI tests: the repository root and the built `jitgate` binary run from it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the workspace, above `tools/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs the built `jitgate` with `args` in the repository root and returns what it printed and its status.
pub fn jitgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jitgate"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}
