//! The load harness's baseline: a bare hyper pass-through proxy (HTTP/1.1 keep-alive in, a pooled hyper-util client
//! out to one upstream), with no authentication, policy or logging. jitgate's overhead is measured against it.
//!
//! `passthrough [--listen 127.0.0.1:8081] [--upstream http://127.0.0.1:9000] [--threads N]`.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

struct Args {
    listen: SocketAddr,
    upstream: Uri,
    threads: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: ([127, 0, 0, 1], 8081).into(),
        upstream: Uri::from_static("http://127.0.0.1:9000"),
        threads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--listen" => a.listen = v.parse().map_err(|e| format!("--listen `{v}`: {e}"))?,
            "--upstream" => a.upstream = v.parse().map_err(|e| format!("--upstream `{v}`: {e}"))?,
            "--threads" => {
                a.threads = Some(v.parse().map_err(|e| format!("--threads `{v}`: {e}"))?)
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: passthrough [--listen ADDR] [--upstream URL] [--threads N])"
                ));
            }
        }
    }
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
    match client.request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(e) => Ok(bad_gateway(format!("upstream: {e}"))),
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
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
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
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
