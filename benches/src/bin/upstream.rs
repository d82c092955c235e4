//! The load harness's upstream: a minimal hyper HTTP/1.1 keep-alive server answering every request with 200 and a
//! small JSON body, so that load runs measure the proxy in front of it, not the backend.
//!
//! `upstream [--listen 127.0.0.1:9000] [--threads N] [--delay-us N]`; prints `listening on <addr>` once bound.
//! `--delay-us` makes every answer wait that long first (a service that does some work, without using CPU).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"ok":true,"service":"upstream"}"#;

fn parse_args() -> Result<(SocketAddr, Option<usize>, u64), String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 9000).into();
    let mut threads = None;
    let mut delay_us = 0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = v.parse().map_err(|e| format!("--listen `{v}`: {e}"))?,
            "--threads" => threads = Some(v.parse().map_err(|e| format!("--threads `{v}`: {e}"))?),
            "--delay-us" => delay_us = v.parse().map_err(|e| format!("--delay-us `{v}`: {e}"))?,
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: upstream [--listen ADDR] [--threads N] [--delay-us N])"
                ));
            }
        }
    }
    Ok((listen, threads, delay_us))
}

async fn answer(
    delay_us: u64,
    _req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if delay_us > 0 {
        tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn serve(listen: SocketAddr, delay_us: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Running out of descriptors under load is transient: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(delay_us, req)),
                )
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let (listen, threads, delay_us) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = threads {
        rt.worker_threads(n);
    }
    let result = rt
        .build()
        .and_then(|rt| rt.block_on(serve(listen, delay_us)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upstream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
