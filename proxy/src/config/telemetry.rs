//! `[telemetry]`: the format of jitgate's own log lines (OpenTelemetry export is not in this build yet).

use serde::Deserialize;

use super::problems::Problems;

/// `[telemetry]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// jitgate's own log lines on stderr: `text` (default) or `json`.
    #[serde(default)]
    pub log_format: Option<String>,
}

/// Validated `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// One JSON object per log line (`log_format = "json"`).
    pub json_logs: bool,
}

/// Validates `[telemetry]`.
pub(crate) fn check(raw: RawTelemetry, p: &mut Problems<'_>) -> TelemetryConfig {
    let mut t = TelemetryConfig::default();
    match raw.log_format.as_deref().map(str::trim) {
        None | Some("text") => {}
        Some("json") => t.json_logs = true,
        Some(other) => p.err(
            "telemetry.log_format",
            format!("`{other}` is not a log format: text or json"),
        ),
    }
    t
}
