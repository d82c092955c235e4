//! `jitgate dev-token`: mints a session token with jitgate's own signing key (the `[local_issuer]` key file), for
//! development, the load harness and scripted tests. It proves identity only; elevated access still needs a grant.
//!
//! Which key, issuer and audience: those of `--config FILE`'s `[local_issuer]`; else, with `--key-file`, that key
//! with the defaults of `[local_issuer]` (issuer and audience `jitgate`); else the quickstart's key under
//! `--state-dir` (default `.jitgate`), with the quickstart's issuer `jitgate-quickstart`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use jitgate_engine::EntityRef;
use jitgate_proxy::authenticate::LocalIssuer;
use jitgate_proxy::config::Config;

/// The quickstart's `[local_issuer] issuer`.
const QUICKSTART_ISSUER: &str = "jitgate-quickstart";
/// The default of `[local_issuer] issuer` and `audience`.
const DEFAULT_ISSUER: &str = "jitgate";

/// Arguments of `jitgate dev-token`.
#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// Take the key file, issuer and audience from this serve config's `[local_issuer]`.
    #[arg(long, short, conflicts_with_all = ["key_file", "state_dir"])]
    pub config: Option<PathBuf>,
    /// The local issuer's key file (created if missing, as the proxy would); issuer and audience default to
    /// `jitgate`, as in `[local_issuer]`.
    #[arg(long, conflicts_with = "state_dir")]
    pub key_file: Option<PathBuf>,
    /// Without --config or --key-file: the quickstart's state directory (its key, issuer `jitgate-quickstart`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The `iss` claim (must match `[local_issuer] issuer`); default as above.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The `aud` claim (must match `[local_issuer] audience`); default as above.
    #[arg(long)]
    pub audience: Option<String>,
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

/// Prints the token alone on stdout.
pub fn run(a: DevTokenArgs) -> anyhow::Result<ExitCode> {
    let (key_file, issuer, audience) = match (&a.config, &a.key_file) {
        (Some(path), _) => {
            let config = Config::load(path).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
            let l = config.local_issuer.with_context(|| {
                format!(
                    "{} has no [local_issuer]: jitgate mints no tokens there",
                    path.display()
                )
            })?;
            (l.key_file, l.issuer, l.audience)
        }
        (None, Some(key)) => (key.clone(), DEFAULT_ISSUER.into(), DEFAULT_ISSUER.into()),
        (None, None) => {
            let dir = a
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".jitgate"));
            let key = dir.join("dev-signing-key.pem");
            anyhow::ensure!(
                key.is_file(),
                "no quickstart key at {} (start `jitgate serve` first, or pass --state-dir, --key-file or --config)",
                key.display()
            );
            (key, QUICKSTART_ISSUER.into(), DEFAULT_ISSUER.into())
        }
    };
    let issuer_name = a.issuer.clone().unwrap_or(issuer);
    let audience = a.audience.clone().unwrap_or(audience);
    let issuer = LocalIssuer::load_or_generate(&key_file, &issuer_name, &audience)
        .with_context(|| format!("loading the signing key {}", key_file.display()))?;
    let now = jitgate_engine::clock::now_system();
    let ttl = i64::try_from(a.ttl.as_secs()).context("ttl too large")?;
    outln!(
        "{}",
        issuer.mint_session(&a.principal, &a.groups, now + ttl, now)?
    );
    Ok(ExitCode::SUCCESS)
}
