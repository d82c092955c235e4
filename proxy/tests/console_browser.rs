//! The approver console in a real browser: headless Chromium driven by `playwright-core`
//! (tools/console-tests/console.test.mjs) against the real quickstart (its development sign-in, the demo upstream,
//! carol's demo grant) on 127.0.0.1. The scenarios: a request approved and revoked from the browser (with the
//! data plane answering 403 after), a held DELETE approved while its caller waits, a reason with markup shown as
//! text, a cross-site POST without the CSRF token refused, a signed-out session unable to act; and a screenshot of
//! each view.
//!
//! Needs `node`, Chromium (`CHROMIUM`, default /usr/bin/chromium) and `npm ci` in tools/console-tests. Without them
//! the test says plainly that it was skipped, unless `JITGATE_TEST_BROWSER=1` (CI), where a missing tool fails it.
//! `JITGATE_CONSOLE_SCREENSHOTS=<dir>` keeps the screenshots there (docs/console holds the README's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jitgate_proxy::quickstart::{self, QuickstartOptions};

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/console-tests")
}

/// What is missing to run the browser, if anything.
fn missing_tools(chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node (apt-get install -y nodejs)".to_string());
    }
    if !chromium.is_file() {
        missing.push(format!(
            "Chromium at {} (apt-get install -y chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    if !tests_dir()
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("playwright-core (npm ci in tools/console-tests)".to_string());
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn console_in_a_real_browser() {
    let required = std::env::var("JITGATE_TEST_BROWSER").is_ok_and(|v| v == "1");
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string()),
    );
    let missing = missing_tools(&chromium);
    if !missing.is_empty() {
        let what = missing.join(", ");
        if required {
            panic!("JITGATE_TEST_BROWSER=1 but the browser test cannot run; missing: {what}");
        }
        eprintln!(
            "SKIPPED console_in_a_real_browser: missing {what} (set JITGATE_TEST_BROWSER=1 to make this a failure)"
        );
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let qs = quickstart::run(QuickstartOptions {
        dir: state.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        bundle: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar")),
    })
    .await
    .unwrap();
    assert!(qs.banner().contains("/ui/"), "the banner names the console");
    let tokens: serde_json::Map<String, serde_json::Value> = qs
        .tokens
        .iter()
        .map(|(n, t)| (n.clone(), serde_json::Value::String(t.clone())))
        .collect();
    let shots = std::env::var("JITGATE_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| state.path().join("screenshots"));
    let mut cmd = Command::new("node");
    cmd.arg("console.test.mjs")
        .current_dir(tests_dir())
        .env(
            "JITGATE_ADMIN",
            format!("http://{}", qs.running.admin_addr.unwrap()),
        )
        .env("JITGATE_DATA", format!("http://{}", qs.running.addr))
        .env(
            "JITGATE_TOKENS",
            serde_json::Value::Object(tokens).to_string(),
        )
        .env("JITGATE_SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium);
    // The script bounds each step (20 s) and itself (3 min); the blocking pool runs it while the proxy serves.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser tests failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("console browser tests: all passed"));
    for view in [
        "sign-in",
        "my-access",
        "approvals",
        "approvals-held",
        "grants",
        "decisions",
        "bundle",
    ] {
        let f = shots.join(format!("{view}.png"));
        assert!(
            std::fs::metadata(&f).is_ok_and(|m| m.len() > 1000),
            "no screenshot {}",
            f.display()
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), qs.running.shutdown()).await;
}
