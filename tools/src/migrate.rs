//! `jitgate migrate --config FILE`: brings the configured store's schema up to date, as `serve` does at start, so
//! an operator can migrate a shared PostgreSQL store once before rolling out replicas. Safe beside running
//! replicas and other migrators (PostgreSQL: an advisory lock; SQLite: a write transaction per version).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use jitgate_proxy::config::Config;

/// Arguments of `jitgate migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The `serve` config whose `[store]` to migrate.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Migrates and prints `store <where>: schema version <from> -> <to>` (exit 0), or the cause (exit 2).
pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
    match &config.store_url {
        Some(url) => {
            let shown = jitgate_engine::postgres::redact_url(url);
            let (_, m) = jitgate_engine::postgres::PgStore::open_migrated(url)
                .map_err(|e| anyhow::anyhow!("[store] url `{shown}`: {e}"))?;
            println!("store {shown}: schema version {} -> {}", m.from, m.to);
        }
        None => {
            let path = &config.store_path;
            let store = jitgate_engine::sqlite::SqliteStore::open(path)
                .map_err(|e| anyhow::anyhow!("[store] path `{}`: {e}", path.display()))?;
            let v = store
                .schema_version()
                .map_err(|e| anyhow::anyhow!("[store] path `{}`: {e}", path.display()))?;
            println!("store {}: schema version {v}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
