//! `jitgate serve`: runs the proxy from a config file, or the quickstart when no config is given.
//! SIGTERM/SIGINT drain in-flight requests and flush the decision log; SIGHUP reloads the bundle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use jitgate_engine::Clock;
use jitgate_proxy::config::Config;
use jitgate_proxy::prepare::prepare;
use jitgate_proxy::quickstart::{self, QuickstartOptions};
use jitgate_proxy::run::{self, Running};

/// Arguments of `jitgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file (TOML; see `schemas/config.schema.json` and the annotated
    /// `schemas/examples/jitgate.example.toml`). Without it, the quickstart runs.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Quickstart only: the data-plane address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Quickstart only: the admin address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// Quickstart only: the state directory.
    #[arg(long, default_value = ".jitgate")]
    pub state_dir: PathBuf,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let running = match &args.config {
            Some(path) => {
                let config =
                    Config::load(path).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
                // One process per SQLite store: a second one refuses here, before it touches anything. Held
                // until the process ends (the lock goes with it, however it ends).
                if config.store_url.is_none() {
                    let lock = jitgate_engine::sqlite::lock_writer(&config.store_path)
                        .map_err(|e| anyhow::anyhow!("[store] path: {e}"))?;
                    std::mem::forget(lock);
                }
                // The checks `jitgate check --config` prints, then the side effects.
                let prepared = prepare(config)
                    .ready()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                run::run(prepared, Clock::system())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
            None => {
                let lock = jitgate_engine::sqlite::lock_writer(&args.state_dir.join("jitgate.db"))
                    .map_err(|e| anyhow::anyhow!("--state-dir: {e}"))?;
                std::mem::forget(lock);
                let qs = quickstart::run(QuickstartOptions {
                    dir: args.state_dir.clone(),
                    listen: args.listen,
                    admin: args.admin,
                    bundle: None,
                })
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                outln!("{}", qs.banner());
                // The demo upstream must outlive the proxy.
                let quickstart::Quickstart {
                    running, upstream, ..
                } = qs;
                std::mem::forget(upstream);
                running
            }
        };
        wait_for_signals(running).await
    })
}

async fn wait_for_signals(running: Running) -> anyhow::Result<ExitCode> {
    running
        .until_signalled()
        .await
        .context("installing signal handlers")?;
    Ok(ExitCode::SUCCESS)
}
