//! `jitgate check`: loads (fully validates) bundles, prints what they hold, and runs the suites they list.
//! A bundle that fails here would fail the reload gate too, with the same diagnostics.
//!
//! `jitgate check --config FILE` is the pre-flight of `jitgate serve --config FILE`: the config as `serve` reads
//! it, then the bundle it names through the gate `serve` and every reload apply (validation, routes to configured
//! upstreams, the bundle's own tests), the shadow bundle, the TLS files (data plane and admin) and the local signing
//! key, and warns about a plain-HTTP admin listener on a non-loopback address. These are the checks of
//! [`jitgate_proxy::prepare`], the step `serve` runs before it starts; like it, this opens no store or log, binds
//! nothing and creates no file.
//!
//! With `--online` it also reaches each issuer, as start-up does: its discovery document (when the issuer is
//! configured with `discovery = true`) and its keys, and prints what it found (the keys with their `kid`, type and
//! the allowed algorithms they verify, the `Cache-Control: max-age`, when jitgate would refresh). An issuer that
//! cannot be reached, advertises another issuer name (a trailing-slash difference is named as such) or publishes
//! no key for its allowed algorithms makes the check fail (exit 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use jitgate_engine::{Diagnostic, Diagnostics, testing};
use jitgate_proxy::config::Config;
use jitgate_proxy::prepare::{CheckedBundle, KeyFile, Preflight, prepare};

use crate::test::{Format, print_report};

/// Arguments of `jitgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Bundle directories (or give `--config FILE` instead, or as well).
    pub bundles: Vec<PathBuf>,
    /// A config file for `jitgate serve`: check it and everything it names as start-up would (the bundle and its
    /// tests, routes to configured upstreams, the shadow bundle, TLS files, the local signing key), without
    /// starting: nothing is bound, opened or created.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// With `--config`: fetch each issuer's discovery document and keys, and report what was found.
    #[arg(long, requires = "config")]
    pub online: bool,
    /// Output format of the bundles' tests.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Checks the config (if given) and each bundle; exit 2 if something does not load, else 1 if a listed test
/// fails, else 0.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.bundles.is_empty() && args.config.is_none() {
        eprintln!(
            "error: nothing to check: name bundle directories (`jitgate check policies/quickstart-cedar`) or a serve \
             config (`jitgate check --config jitgate.toml`)"
        );
        return Ok(ExitCode::from(crate::exit::USAGE));
    }
    let mut worst = 0u8;
    if let Some(path) = &args.config {
        worst = worst.max(check_config(path, args.format, args.online)?);
    }
    for dir in &args.bundles {
        worst = worst.max(check_bundle(dir, args.format)?);
    }
    Ok(ExitCode::from(worst))
}

/// Loads and tests one bundle, printing what it holds and its tests' report. Returns the exit code for it.
fn check_bundle(dir: &Path, format: Format) -> anyhow::Result<u8> {
    let loaded = testing::check(dir).map(|(bundle, report)| CheckedBundle {
        bundle,
        report,
        unrouted: Vec::new(),
    });
    print_bundle(dir, loaded, format)
}

/// Prints what a loaded bundle holds, its tests' report and the problems found against the config (routes without
/// upstream). Returns the exit code for it.
fn print_bundle(
    dir: &Path,
    loaded: Result<CheckedBundle, Diagnostics>,
    format: Format,
) -> anyhow::Result<u8> {
    let CheckedBundle {
        bundle,
        report,
        unrouted,
    } = match loaded {
        Err(diags) => return Ok(refused(dir, "invalid bundle", &diags.0)),
        Ok(loaded) => loaded,
    };
    // The first line says how it went: `ok` only when its tests pass and it fits the config.
    let verdict = if report.as_ref().is_some_and(|r| r.exit_code() != 0) {
        "FAILED its tests"
    } else if !unrouted.is_empty() {
        "does not fit the config"
    } else {
        "ok"
    };
    outln!(
        "{}: {verdict} — engine {}, revision {}, {} policies, {} routes, {} roles, {} test file(s)",
        dir.display(),
        bundle.engine().as_str(),
        bundle.short_revision(),
        bundle.backend().policy_ids().len(),
        bundle.routes.len(),
        bundle.roles.len(),
        bundle.test_files.len()
    );
    if let Some(summary) = bundle.backend().index_summary() {
        outln!("  {summary}");
    }
    for w in bundle.warnings() {
        eprintln!("warning: {w}");
    }
    let mut code = 0;
    if let Some(report) = report {
        print_report(&report, format)?;
        code = u8::try_from(report.exit_code()).unwrap_or(2);
    }
    if !unrouted.is_empty() {
        code = refused(dir, "bundle does not fit the config", &unrouted);
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

/// The timeout of each request `--online` makes (the proxy's default for key fetches).
const ONLINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The lines `--online` prints for an issuer that answered.
fn describe_probe(p: &jitgate_proxy::authenticate::IssuerProbe) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(d) = &p.discovery_url {
        lines.push(format!(
            "issuer {}: discovery ok — {d} names this issuer, jwks_uri {}",
            p.issuer, p.jwks_url
        ));
    }
    let keys: Vec<String> = p
        .keys
        .iter()
        .map(|k| {
            format!(
                "{} {}{} (verifies {})",
                k.kid.as_deref().unwrap_or("<no kid>"),
                k.kind,
                k.alg
                    .as_deref()
                    .map_or_else(String::new, |a| format!(" alg {a}")),
                if k.usable_for.is_empty() {
                    "none of the allowed algorithms".to_string()
                } else {
                    k.usable_for.join(", ")
                }
            )
        })
        .collect();
    lines.push(format!(
        "issuer {}: keys ok — {}: {} key(s): {}; max-age {}; refreshed every {}s",
        p.issuer,
        p.jwks_url,
        p.keys.len(),
        keys.join("; "),
        p.max_age
            .map_or_else(|| "not sent".to_string(), |a| format!("{a}s")),
        p.refresh_in_secs
    ));
    for s in &p.skipped {
        lines.push(format!("issuer {}: skipped {s}", p.issuer));
    }
    lines
}

/// Prints the outcome of each start-up check of [`prepare`], the one `serve` runs before it starts.
fn check_config(path: &Path, format: Format, online: bool) -> anyhow::Result<u8> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(diags) => return Ok(refused(path, "invalid config", &diags.0)),
    };
    let Preflight {
        config,
        bundle,
        shadow,
        tls,
        admin_tls,
        local_key,
        warnings,
    } = prepare(config);
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    if let (Some(t), Some(outcome)) = (&config.tls, tls) {
        match outcome {
            Ok(_) => notes.push(format!(
                "tls: ok — {}{}",
                t.cert.display(),
                match (&t.client_ca, t.require_client_cert) {
                    (Some(_), true) => ", client certificates required",
                    (Some(_), false) => ", client certificates verified when presented",
                    (None, _) => "",
                }
            )),
            Err(e) => problems.push(Diagnostic::file(path, format!("server.tls: {e}"))),
        }
    }
    if let (Some(t), Some(outcome)) = (&config.admin_tls, admin_tls) {
        match outcome {
            Ok(_) => notes.push(format!("admin tls: ok — {}", t.cert.display())),
            Err(e) => problems.push(Diagnostic::file(path, format!("admin.tls: {e}"))),
        }
    }
    notes.extend(warnings.iter().map(|w| format!("warning: {w}")));
    if let (Some(l), Some(outcome)) = (&config.local_issuer, local_key) {
        match outcome {
            Ok(KeyFile::Present) => {
                notes.push(format!("local issuer: key {} ok", l.key_file.display()))
            }
            Ok(KeyFile::Missing) => notes.push(format!(
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
    if online {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let found = runtime.block_on(jitgate_proxy::prepare::online(&config, ONLINE_TIMEOUT));
        for (i, (issuer, outcome)) in found.into_iter().enumerate() {
            match outcome {
                Ok(p) => notes.extend(describe_probe(&p)),
                Err(e) => problems.push(Diagnostic::file(
                    path,
                    format!("issuers[{i}] (`{issuer}`): {e}"),
                )),
            }
        }
    }
    if problems.is_empty() {
        let admin = config
            .admin_listen
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        outln!(
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
            outln!("  {n}");
        }
    } else {
        code = refused(path, "invalid config", &problems);
    }
    code = code.max(print_bundle(&config.bundle_path, bundle, format)?);
    if let (Some(dir), Some(outcome)) = (&config.bundle_shadow, shadow) {
        code = code.max(match outcome {
            Ok(b) => {
                outln!(
                    "{}: ok (shadow) — revision {}",
                    dir.display(),
                    b.short_revision()
                );
                0
            }
            Err(diags) => refused(dir, "invalid shadow bundle", &diags.0),
        });
    }
    Ok(code)
}
