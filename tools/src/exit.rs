//! One exit-code convention for every command (also in `jitgate --help` and the README).

/// Shown at the end of `jitgate --help`.
pub const CODES: &str = "\
Exit codes (every command):
  0  done: allowed, approved, intact, all tests passed
  1  refused or not as hoped: the API or a policy refused, a test failed, a check found problems, a log is not
     intact, a replay found changes, a bundle failed the reload gate
  2  usage or bad input: a wrong flag or value, a broken file, a field the API rejected as invalid
  3  cannot reach: the admin API did not answer, or answered with a server error (5xx)

Data goes to stdout, messages to stderr: `T=$(jitgate token --grant G)` captures the token alone.";

/// Refused, failed check, not intact.
pub const REFUSED: u8 = 1;
/// Usage or bad input.
pub const USAGE: u8 = 2;
/// Cannot reach the proxy, or it failed (5xx).
pub const UNREACHABLE: u8 = 3;

/// The exit code of a command that ended in error `e`: 3 when an HTTP call could not be made, else 2.
pub fn of_error(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<reqwest::Error>()) || e.is::<Unreachable>() {
        UNREACHABLE
    } else {
        USAGE
    }
}

/// The exit code for an admin API answer with HTTP `status`: 0 success, 2 a request the API found invalid (400,
/// 413, 422 other than a reload's), 3 a server error, 1 any other refusal (401, 403, 404, 409).
pub fn of_status(status: reqwest::StatusCode) -> u8 {
    match status.as_u16() {
        200..=299 => 0,
        400 | 413 | 422 => USAGE,
        500..=599 => UNREACHABLE,
        _ => REFUSED,
    }
}

/// The proxy could not be reached or failed: exit 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);
