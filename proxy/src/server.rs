//! accept: the data-plane listener. tokio accepts, rustls terminates TLS when configured, hyper serves HTTP/1.1
//! and HTTP/2 (ALPN over TLS, prior knowledge on plain TCP). Limits and graceful shutdown live here.

use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use jitgate_engine::EntityRef;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::pipeline::ConnInfo;
use crate::state::Proxy;

/// Serves the data plane on `listener` until `shutdown` resolves, then stops accepting and drains in-flight
/// requests for up to the configured grace period.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let config = proxy.config.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the connection limit: close at once rather than queue work we cannot do.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let info = ConnInfo {
                        peer,
                        tls: false,
                        client_cert: None,
                    };
                    let svc = service_fn(move |req| {
                        let proxy = proxy.clone();
                        let info = info.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, info).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let Some(tls_stream) = crate::tls::handshake(
                        &acceptor,
                        stream,
                        peer,
                        proxy.config.header_timeout,
                        "data plane",
                    )
                    .await
                    else {
                        return;
                    };
                    let client_cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::principal_from_cert)
                        .map(|id| EntityRef::new(proxy.client_principal_type.clone(), id));
                    let info = ConnInfo {
                        peer,
                        tls: true,
                        client_cert,
                    };
                    let svc = service_fn(move |req| {
                        let proxy = proxy.clone();
                        let info = info.clone();
                        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, info).await) }
                    });
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period passed with requests still in flight");
    }
}
