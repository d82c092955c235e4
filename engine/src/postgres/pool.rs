//! Connections to PostgreSQL: how to open one (TLS or not, by where the server is) and a small bounded pool of
//! them. A connection that broke is dropped, not returned; the next caller opens a fresh one.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};

use super::describe;
use crate::store::StoreError;

/// How long a caller waits for a free connection when the pool is at its size.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a connection may take when the URL does not say (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens connections to one server with one TLS choice.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The URL with its password masked, for messages.
    pub(crate) shown: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.shown)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Whether every host of `config` is this machine (a loopback address, `localhost` or a Unix socket).
fn loopback_only(config: &Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    })
}

/// `url` with the password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl Connector {
    /// Reads `url` (`postgres://user[:password]@host[:port]/db[?sslmode=...]`). Servers on this machine are
    /// reached without TLS unless `sslmode=require`; any other server only over TLS (rustls, the Mozilla roots),
    /// unless the URL says `sslmode=disable`.
    pub(crate) fn new(url: &str) -> Result<Self, StoreError> {
        let shown = redact_url(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::database(
                "",
                format!("`{shown}` is not a postgres:// URL"),
            ));
        }
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::database("", describe(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(StoreError::database("", format!("`{shown}` names no host")));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // A server that vanished without a word (no RST) is noticed by keepalives rather than never.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            SslMode::Require => Some(rustls_connector()?),
            _ if loopback_only(&config) => None,
            _ => {
                config.ssl_mode(SslMode::Require);
                Some(rustls_connector()?)
            }
        };
        Ok(Connector { config, tls, shown })
    }

    /// Opens one connection.
    pub(crate) fn connect(&self) -> Result<Client, StoreError> {
        off_runtime(|| self.connect_here())
    }

    /// Opens one connection, runs `f` on it and closes it, all where blocking is allowed (see [`off_runtime`]:
    /// the synchronous client blocks when it connects, queries and closes).
    pub(crate) fn session<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        off_runtime(|| {
            let mut c = self.connect_here()?;
            f(&mut c)
        })
    }

    fn connect_here(&self) -> Result<Client, StoreError> {
        let r = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        r.map_err(|e| {
            StoreError::database(format!("cannot connect to {}", self.shown), describe(&e))
        })
    }
}

fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::database("cannot set up TLS", e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A bounded pool of connections.
pub(crate) struct Pool {
    connector: Connector,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections out of the pool plus idle ones.
    open: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connector", &self.connector)
            .field("max", &self.max)
            .finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's own runtime.
        let idle = std::mem::take(&mut self.state.get_mut().idle);
        off_runtime(move || drop(idle));
    }
}

impl Pool {
    /// A pool of at most `max` connections opened by `connector`.
    pub(crate) fn new(connector: Connector, max: usize) -> Self {
        Pool {
            connector,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// The connector (for connections of their own, e.g. LISTEN).
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Runs `f` on a connection: an idle one, a new one while fewer than `max` are open, or the next one freed
    /// (waiting up to [`CHECKOUT_TIMEOUT`]). The connection goes back to the pool afterwards unless it broke.
    ///
    /// An idle connection may have been ended by the server while it sat in the pool (`pg_terminate_backend`, a
    /// restart); that shows only when it is used. When `f` fails on a reused connection that turns out closed,
    /// `f` runs once more on a fresh connection. The closed connection never carried `f`'s work to a commit: a
    /// server that ends a backend rolls back its open transaction, and a statement the server completed is
    /// answered before the connection ends. A failure on a fresh connection is returned as it is.
    pub(crate) fn with<T: Send, E: From<StoreError> + Send>(
        &self,
        f: impl FnMut(&mut Client) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        off_runtime(|| self.with_here(f))
    }

    fn with_here<T, E: From<StoreError>>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, E> {
        let (mut client, reused) = self.checkout()?;
        let mut out = f(&mut client);
        if out.is_err() && reused && client.is_closed() {
            self.put_back(client);
            client = self.connect_fresh()?;
            out = f(&mut client);
        }
        self.put_back(client);
        out
    }

    fn put_back(&self, client: Client) {
        let mut s = self.state.lock();
        if client.is_closed() {
            s.open = s.open.saturating_sub(1);
        } else {
            s.idle.push(client);
        }
        drop(s);
        self.freed.notify_one();
    }

    /// A new connection in place of one just given back closed (its slot was freed by `put_back`).
    fn connect_fresh(&self) -> Result<Client, StoreError> {
        loop {
            let (client, reused) = self.checkout()?;
            if !reused {
                return Ok(client);
            }
            // An idle connection is as suspect as the one that broke: drop it and open one of our own.
            let mut s = self.state.lock();
            s.open = s.open.saturating_sub(1);
            drop(s);
            drop(client);
        }
    }

    /// A connection and whether it was reused from the idle list.
    fn checkout(&self) -> Result<(Client, bool), StoreError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut s = self.state.lock();
        loop {
            if let Some(c) = s.idle.pop() {
                if c.is_closed() {
                    s.open = s.open.saturating_sub(1);
                    continue;
                }
                return Ok((c, true));
            }
            if s.open < self.max {
                s.open += 1;
                drop(s);
                return self
                    .connector
                    .connect()
                    .map(|c| (c, false))
                    .inspect_err(|_| {
                        let mut s = self.state.lock();
                        s.open = s.open.saturating_sub(1);
                        drop(s);
                        self.freed.notify_one();
                    });
            }
            if self.freed.wait_until(&mut s, deadline).timed_out() {
                return Err(StoreError::database(
                    "",
                    format!(
                        "no connection to {} free within {}s (all {} in use)",
                        self.connector.shown,
                        CHECKOUT_TIMEOUT.as_secs(),
                        self.max
                    ),
                ));
            }
        }
    }
}

/// Runs `f`, which blocks on the synchronous PostgreSQL client (it drives a runtime of its own), where that may
/// block: as it is outside any async runtime; through `block_in_place` on a multi-threaded one (the proxy's: its
/// other workers go on serving); on a thread of its own under a current-thread runtime, which cannot be blocked.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}
