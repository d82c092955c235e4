//! `jitgate check`: loads (fully validates) bundles, prints what they hold, and runs the suites they list.
//! A bundle that fails here would fail the reload gate too, with the same diagnostics.
//!
//! `jitgate check --config FILE` is the pre-flight of `jitgate serve --config FILE`: the config as `serve` reads
//! it, then the bundle it names through the gate `serve` and every reload apply (validation, routes to configured
//! upstreams, the bundle's own tests), the shadow bundle, the TLS files (data plane and admin) and the local signing
//! key, and warns about a plain-HTTP admin listener on a non-loopback address. It opens no store or log, binds
//! nothing and creates no file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use jitgate_engine::{Bundle, Diagnostic, testing};
use jitgate_proxy::authenticate::LocalIssuer;
use jitgate_proxy::config::Config;
use jitgate_proxy::reload::upstream_coverage;

use crate::test::{Format, print_report};

/// Arguments of `jitgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Bundle directories.
    #[arg(required_unless_present = "config")]
    pub bundles: Vec<PathBuf>,
    /// A config file for `jitgate serve`: check it and everything it names, as start-up would (see the module
    /// docs).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Output format of the bundles' tests.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Checks the config (if given) and each bundle; exit 2 if something does not load, else 1 if a listed test
/// fails, else 0.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut worst = 0u8;
    if let Some(path) = &args.config {
        worst = worst.max(check_config(path, args.format)?);
    }
    for dir in &args.bundles {
        worst = worst.max(check_bundle(dir, args.format, |_| Vec::new())?);
    }
    Ok(ExitCode::from(worst))
}

/// Loads and gates one bundle, printing what it holds and its tests' report; `extra` adds problems found against
/// the bundle once loaded. Returns the exit code for it.
fn check_bundle(
    dir: &Path,
    format: Format,
    extra: impl Fn(&Bundle) -> Vec<Diagnostic>,
) -> anyhow::Result<u8> {
    let (bundle, tests) = match testing::check(dir) {
        Err(diags) => return Ok(refused(dir, "invalid bundle", &diags.0)),
        Ok(loaded) => loaded,
    };
    println!(
        "{}: ok — engine {}, revision {}, {} policies, {} routes, {} roles, {} test file(s)",
        dir.display(),
        bundle.engine().as_str(),
        bundle.short_revision(),
        bundle.backend().policy_ids().len(),
        bundle.routes.len(),
        bundle.roles.len(),
        bundle.test_files.len()
    );
    if let Some(summary) = bundle.backend().index_summary() {
        println!("  {summary}");
    }
    let mut code = 0;
    if let Some(report) = tests {
        print_report(&report, format)?;
        code = u8::try_from(report.exit_code()).unwrap_or(2);
    }
    let problems = extra(&bundle);
    if !problems.is_empty() {
        code = refused(dir, "bundle does not fit the config", &problems);
    }
    Ok(code)
}

/// Prints `problems` on stderr with a summary line naming `what`; the exit code 2.
fn refused(what: &Path, why: &str, problems: &[Diagnostic]) -> u8 {
    for d in problems {
        eprintln!("error: {d}");
    }
    eprintln!("{}: {why} ({} problem(s))", what.display(), problems.len());
    2
}

fn check_config(path: &Path, format: Format) -> anyhow::Result<u8> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(diags) => return Ok(refused(path, "invalid config", &diags.0)),
    };
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    if let Some(tls) = &config.tls {
        match jitgate_proxy::tls::server_config(tls) {
            Ok(_) => notes.push(format!(
                "tls: ok — {}{}",
                tls.cert.display(),
                match (&tls.client_ca, tls.require_client_cert) {
                    (Some(_), true) => ", client certificates required",
                    (Some(_), false) => ", client certificates verified when presented",
                    (None, _) => "",
                }
            )),
            Err(e) => problems.push(Diagnostic::file(path, format!("server.tls: {e}"))),
        }
    }
    match (&config.admin_tls, config.admin_listen) {
        (Some(tls), _) => match jitgate_proxy::tls::server_config(tls) {
            Ok(_) => notes.push(format!("admin tls: ok — {}", tls.cert.display())),
            Err(e) => problems.push(Diagnostic::file(path, format!("admin.tls: {e}"))),
        },
        (None, Some(a)) if !a.ip().is_loopback() => notes.push(format!(
            "warning: the admin listener {a} is plain HTTP on a non-loopback address; bearer tokens and approvals \
             would cross the network in clear text (set [admin.tls])"
        )),
        _ => {}
    }
    if let Some(l) = &config.local_issuer {
        match LocalIssuer::check_key_file(&l.key_file) {
            Ok(true) => notes.push(format!("local issuer: key {} ok", l.key_file.display())),
            Ok(false) => notes.push(format!(
                "local issuer: {} does not exist yet; `serve` generates it (mode 0600)",
                l.key_file.display()
            )),
            Err(e) => problems.push(Diagnostic::file(
                path,
                format!("local_issuer.key_file: {e}"),
            )),
        }
    }
    let mut code = 0;
    if problems.is_empty() {
        let admin = config
            .admin_listen
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        println!(
            "{}: ok — listen {}{}, admin {admin}, {} issuer(s){}, upstreams: {}",
            path.display(),
            config.listen,
            if config.tls.is_some() { " (TLS)" } else { "" },
            config.issuers.len(),
            if config.local_issuer.is_some() {
                " + local issuer"
            } else {
                ""
            },
            config
                .upstreams
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        for n in &notes {
            println!("  {n}");
        }
    } else {
        code = refused(path, "invalid config", &problems);
    }
    let services = config.upstreams.keys().cloned().collect();
    code = code.max(check_bundle(&config.bundle_path, format, |b| {
        upstream_coverage(b, &services)
    })?);
    if let Some(shadow) = &config.bundle_shadow {
        code = code.max(match Bundle::load(shadow) {
            Ok(b) => {
                println!(
                    "{}: ok (shadow) — revision {}",
                    shadow.display(),
                    b.short_revision()
                );
                0
            }
            Err(diags) => refused(shadow, "invalid shadow bundle", &diags.0),
        });
    }
    Ok(code)
}
