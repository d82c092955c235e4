//! `jitgate dev-token`: mints a session token with jitgate's own signing key (the `[local_issuer]` key file), for
//! development, the load harness and scripted tests. It proves identity only; elevated access still needs a grant.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use jitgate_engine::EntityRef;
use jitgate_proxy::authenticate::LocalIssuer;

/// Arguments of `jitgate dev-token`.
#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The local issuer's key file (created if missing, as the proxy would).
    #[arg(long)]
    pub key_file: PathBuf,
    /// The `iss` claim (must match `[local_issuer] issuer`).
    #[arg(long, default_value = "jitgate")]
    pub issuer: String,
    /// The `aud` claim (must match `[local_issuer] audience`).
    #[arg(long, default_value = "jitgate")]
    pub audience: String,
    /// The principal, e.g. `User::"alice"`.
    #[arg(long)]
    pub principal: EntityRef,
    /// Groups (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Lifetime, e.g. `1h`.
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,
}

/// Prints the token on stdout.
pub fn run(a: DevTokenArgs) -> anyhow::Result<ExitCode> {
    let issuer = LocalIssuer::load_or_generate(&a.key_file, &a.issuer, &a.audience)
        .with_context(|| format!("loading the signing key {}", a.key_file.display()))?;
    let now = jitgate_engine::clock::now_system();
    let ttl = i64::try_from(a.ttl.as_secs()).context("ttl too large")?;
    println!(
        "{}",
        issuer.mint_session(&a.principal, &a.groups, now + ttl, now)?
    );
    Ok(ExitCode::SUCCESS)
}
