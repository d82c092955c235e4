//! The load harness's baseline: a bare hyper pass-through proxy (HTTP/1.1 keep-alive in, a pooled hyper-util client
//! out to one upstream), with no authentication, policy or logging. jitgate's overhead is measured against it.
//!
//! `passthrough [--listen 127.0.0.1:8081] [--upstream http://127.0.0.1:9000] [--threads N] [--auto]
//! [--tls-cert PEM --tls-key PEM]`.
//!
//! `--auto` serves HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one port through hyper-util's auto builder, as
//! jitgate's data plane does; `--tls-cert`/`--tls-key` serve TLS (rustls, ALPN `h2` and `http/1.1`, the auto
//! builder behind it), as jitgate's `[server.tls]` does. The upstream side is HTTP/1.1 either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type Body = BoxBody<Bytes, hyper::Error>;

struct Args {
    listen: SocketAddr,
    upstream: Uri,
    threads: Option<usize>,
    /// HTTP/1.1 and HTTP/2 (h2c) through the auto builder, not the HTTP/1.1 builder alone.
    auto: bool,
    /// `(certificate chain, private key)`, PEM: serve TLS.
    tls: Option<(PathBuf, PathBuf)>,
}

const USAGE: &str = "usage: passthrough [--listen ADDR] [--upstream URL] [--threads N] [--auto] [--tls-cert PEM --tls-key PEM]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: ([127, 0, 0, 1], 8081).into(),
        upstream: Uri::from_static("http://127.0.0.1:9000"),
        threads: None,
        auto: false,
        tls: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        if k == "--auto" {
            a.auto = true;
            continue;
        }
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--tls-cert" => cert = Some(PathBuf::from(v)),
            "--tls-key" => key = Some(PathBuf::from(v)),
            "--listen" => a.listen = v.parse().map_err(|e| format!("--listen `{v}`: {e}"))?,
            "--upstream" => a.upstream = v.parse().map_err(|e| format!("--upstream `{v}`: {e}"))?,
            "--threads" => {
                a.threads = Some(v.parse().map_err(|e| format!("--threads `{v}`: {e}"))?)
            }
            other => return Err(format!("unknown argument `{other}` ({USAGE})")),
        }
    }
    a.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(format!("--tls-cert and --tls-key go together ({USAGE})")),
    };
    if a.upstream.scheme_str() != Some("http") || a.upstream.authority().is_none() {
        return Err(format!(
            "--upstream `{}`: must be http://host:port",
            a.upstream
        ));
    }
    Ok(a)
}

fn bad_gateway(why: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(why))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut parts = upstream.into_parts();
    parts.path_and_query = path.parse().ok();
    let uri = match Uri::from_parts(parts) {
        Ok(u) => u,
        Err(e) => return Ok(bad_gateway(format!("bad upstream uri: {e}"))),
    };
    if let Some(authority) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, authority);
    }
    req.headers_mut().remove(CONNECTION);
    *req.uri_mut() = uri;
    // An HTTP/2 request goes on upstream as HTTP/1.1 (the pooled client's connections are HTTP/1.1).
    *req.version_mut() = Version::HTTP_11;
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(e) => Ok(bad_gateway(format!("upstream: {e}"))),
    }
}

/// A rustls server configuration from PEM files, with ALPN `h2` then `http/1.1` (as jitgate's `[server.tls]`).
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let open = |p: &PathBuf| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut open(key)?)
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no PEM private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one connection: HTTP/1.1 alone, or HTTP/1.1 and HTTP/2 through the auto builder.
async fn serve_connection<I>(
    io: I,
    auto: bool,
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
    if auto {
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), svc)
            .await;
    } else {
        let _ = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), svc)
            .await;
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let tls = match &args.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key).map_err(std::io::Error::other)?),
        None => None,
    };
    // TLS picks the protocol by ALPN, so it needs the builder that speaks both.
    let auto = args.auto || tls.is_some();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4_096)
        .build(connector);
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "listening on {} -> {}",
        listener.local_addr()?,
        args.upstream
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = args.upstream.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_connection(stream, auto, client, upstream).await,
                    Err(e) => eprintln!("tls: {e}"),
                },
                None => serve_connection(stream, auto, client, upstream).await,
            }
        });
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    match rt.build().and_then(|rt| rt.block_on(serve(args))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("passthrough: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
